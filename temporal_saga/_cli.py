"""``python -m temporal_saga``: show a saga's trace, list sagas, audit what is stored.

    python -m temporal_saga show WORKFLOW_ID [--run-id ID] [--follow]
    python -m temporal_saga list [--status STATUS] [--limit N]
    python -m temporal_saga codec-server [--port 8888] [--origin http://localhost:8233]
    python -m temporal_saga new-key [--id ID]
    python -m temporal_saga audit WORKFLOW_ID [--run-id ID]

Connects like the ``temporal`` CLI (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, TLS,
``TEMPORAL_API_KEY``, profile files). Errors print one line and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from ._audit import audit_history
from ._client import connect
from ._codec import EncryptionCodec, new_key
from ._codec_server import make_server
from ._history import NotASaga
from ._saga import SAGA_STATUS_ATTRIBUTE
from ._state import SagaStatus
from ._trace import render_trace
from ._watch import follow_trace, load_state


class CliError(Exception):
    """An error the CLI reports as one line."""


async def show(client: Client, workflow_id: str, run_id: str | None, follow: bool) -> None:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    await handle.describe()  # fails early and clearly for an unknown id
    if follow:
        async for line in follow_trace(handle, interval=0.5):
            print(line, flush=True)
        print()
    state, source = await load_state(handle)
    print(render_trace(state))
    if source == "history":
        print(
            "\n(rebuilt from the workflow's history: no worker answered the query, "
            "or its answer is encrypted with a key this machine lacks)"
        )


async def audit(client: Client, workflow_id: str, run_id: str | None) -> int:
    """Print what the saga's history holds in clear; 1 if any payload content is."""
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    found = audit_history(history.events)
    print(f"{workflow_id}: {found.report()}")
    return 1 if found.in_clear else 0


async def list_sagas(client: Client, status: str | None, limit: int) -> None:
    name = SAGA_STATUS_ATTRIBUTE.name
    query = f'{name}="{status}"' if status else f"{name} IS NOT NULL"
    print(f"{'WORKFLOW ID':40} {'SAGA STATUS':20} {'WORKFLOW':12} STARTED")
    async for execution in client.list_workflows(query, limit=limit):
        saga_status = execution.typed_search_attributes.get(SAGA_STATUS_ATTRIBUTE)
        workflow_status = execution.status.name if execution.status else "?"
        started = execution.start_time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{execution.id:40} {saga_status or '?':20} {workflow_status:12} {started}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m temporal_saga", description="Trace and find sagas on Temporal."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show_cmd = commands.add_parser("show", help="print a saga's trace")
    show_cmd.add_argument("workflow_id")
    show_cmd.add_argument("--run-id")
    show_cmd.add_argument("--follow", action="store_true", help="print lines until it ends")
    list_cmd = commands.add_parser("list", help="list sagas (needs the SagaStatus attribute)")
    list_cmd.add_argument("--status", choices=[s.value for s in SagaStatus])
    list_cmd.add_argument("--limit", type=int, default=50)
    codec_cmd = commands.add_parser("codec-server", help="decrypt payloads for the Web UI")
    codec_cmd.add_argument("--host", default="127.0.0.1")
    codec_cmd.add_argument("--port", type=int, default=8888)
    codec_cmd.add_argument(
        "--origin",
        action="append",
        help="the Web UI's origin (repeat for several; default http://localhost:8233)",
    )
    audit_cmd = commands.add_parser("audit", help="what a saga's history holds in clear")
    audit_cmd.add_argument("workflow_id")
    audit_cmd.add_argument("--run-id")
    key_cmd = commands.add_parser("new-key", help="print a fresh encryption key entry")
    key_cmd.add_argument("--id", default="k1", help="the key's id, stored with each payload")
    return parser


def codec_server(args: argparse.Namespace) -> None:
    codec = EncryptionCodec.from_env()
    if codec is None:
        raise CliError("no keys: set TEMPORAL_SAGA_KEYS or TEMPORAL_SAGA_KEY_FILE")
    token = os.environ.get("TEMPORAL_SAGA_CODEC_TOKEN", "")
    if not token:
        raise CliError("no token: set TEMPORAL_SAGA_CODEC_TOKEN")
    origins = args.origin or ["http://localhost:8233"]
    server = make_server(codec, token, host=args.host, port=args.port, origin=origins)
    print(
        f"codec server on http://{args.host}:{args.port} for the Web UI at "
        f"{', '.join(origins)}; "
        f"sign in at http://{args.host}:{args.port}/",
        flush=True,
    )
    server.serve_forever()


async def _run(args: argparse.Namespace) -> int:
    address = os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")
    try:
        client = await connect(connect_timeout=timedelta(seconds=5))
    except RuntimeError as err:
        raise CliError(f"cannot reach Temporal at {address}: {err}") from err
    try:
        if args.command == "show":
            await show(client, args.workflow_id, args.run_id, args.follow)
        elif args.command == "audit":
            return await audit(client, args.workflow_id, args.run_id)
        else:
            await list_sagas(client, args.status, args.limit)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND and args.command == "list":
            raise CliError(f"cannot list sagas: {err.message}") from err
        if err.status == RPCStatusCode.NOT_FOUND:
            raise CliError(
                f"no workflow {args.workflow_id!r} in namespace {client.namespace!r}"
            ) from err
        if err.status == RPCStatusCode.INVALID_ARGUMENT and args.command == "list":
            raise CliError(
                f"cannot list sagas: {err.message} (is the SagaStatus search attribute "
                "registered? see the README)"
            ) from err
        raise CliError(f"Temporal at {address}: {err.message}") from err
    except NotASaga as err:
        raise CliError(f"workflow {args.workflow_id!r} is not a saga ({err})") from err
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "codec-server":
            codec_server(args)
        elif args.command == "new-key":
            print(new_key(args.id))
        else:
            return asyncio.run(_run(args))
    except (CliError, ValueError) as err:  # ValueError: malformed keys
        print(f"temporal-saga: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
