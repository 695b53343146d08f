"""The ``temporal-saga`` command (also ``python -m temporal_saga``).

Connects like the ``temporal`` CLI (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, TLS,
``TEMPORAL_API_KEY``, profile files). Errors print one line on stderr. The exit codes
are in ``EXIT_CODES``, so scripts can tell a compensated saga from one that needs a
human.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import textwrap
import time
from collections.abc import Sequence
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError
from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from .._errors import ActionRejected, NotASaga, SagaError
from .._protocol import FAILED_AGAIN, SAGA_STATUS_ATTRIBUTE
from .._sdk import install_hint
from .._state import SagaState, SagaStatus
from .._trace import render_trace
from ._connect import connect, web_ui_list_url, web_ui_url
from ._graph import GRAPH_KINDS, render_graph
from ._operate import give_up, resolve_step, retry_step, send_event
from ._watch import follow_trace, load_state, watch

OK, ERROR, USAGE, COMPENSATED, NEEDS_HUMAN, IN_CLEAR = 0, 1, 2, 3, 4, 5
EXIT_CODES = {
    OK: "done; for show, the saga succeeded or is still running",
    ERROR: "an error, printed in one line (unreachable server, unknown workflow, bad key); "
    "replay-check: a history does not replay against the new code; retry: it failed again",
    USAGE: "the command line is wrong",
    COMPENSATED: "show: the saga failed and everything that took effect was undone",
    NEEDS_HUMAN: "show: the saga needs a human (a compensation failed, or a step after "
    "the pivot did not finish; while it waits, retry, resolve and give-up act on it)",
    IN_CLEAR: "audit: payload content is stored in clear",
}


class CliError(Exception):
    """An error the CLI reports as one line."""


def _exit_code(state: SagaState) -> int:
    if state.needs_human or state.status in (
        SagaStatus.COMPENSATION_FAILED,
        SagaStatus.INTERRUPTED,
    ):
        return NEEDS_HUMAN
    return COMPENSATED if state.status is SagaStatus.COMPENSATED else OK


def _show_misuse(args: argparse.Namespace) -> str | None:
    """What is wrong with ``show``'s arguments together, if anything (a usage error)."""
    if args.spec is not None:
        if args.workflow_id is not None or args.graph is None or args.follow:
            return "show --spec FILE draws a spec: give --graph svg|mermaid, and no workflow id"
    elif args.workflow_id is None:
        return "show needs a workflow id (or --spec FILE --graph svg|mermaid)"
    elif args.graph is not None and (args.follow or args.output == "json"):
        return "show --graph prints the picture alone: not with --follow or --output json"
    return None


def show_spec(args: argparse.Namespace) -> int:
    """Draw a declarative saga from its spec alone, before anything runs."""
    from ..declarative import SagaSpec  # only here: the CLI needs it for nothing else

    try:
        spec = SagaSpec.model_validate_json(Path(args.spec).read_text())
    except OSError as err:
        raise CliError(f"cannot read {args.spec}: {err.strerror}") from err
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CliError(f"{args.spec} is not a saga spec: {where}: {first['msg']}") from err
    try:
        state = spec.build().state
    except SagaError as err:
        raise CliError(f"{args.spec}: {err}") from err
    names = {step.name for step in spec.steps}
    for step in spec.steps:
        unknown = [name for name in step.after if name not in names]
        if unknown:
            raise CliError(f"{args.spec}: step {step.name!r} waits for unknown {unknown[0]!r}")
    # Not resolved yet (that is run()'s): the spec names the arrows itself.
    after = {step.name: step.after for step in spec.steps}
    state = state.model_copy(
        update={"steps": [s.model_copy(update={"after": after[s.name]}) for s in state.steps]}
    )
    print(render_graph(state, args.graph, heading=f"saga {spec.name}: not started"), end="")
    return OK


async def show(client: Client, args: argparse.Namespace) -> int:
    handle = client.get_workflow_handle(args.workflow_id, run_id=args.run_id)
    described = await handle.describe()  # fails early and clearly for an unknown id
    as_json = args.output == "json"
    if args.follow and as_json:  # one JSON line per change
        last: SagaState | None = None
        async for last in watch(handle, interval=0.5):
            print(last.model_dump_json(), flush=True)
        if last is None:
            last, _ = await load_state(handle)
            print(last.model_dump_json(), flush=True)
        return _exit_code(last)
    if args.follow:
        async for line in follow_trace(handle, interval=0.5):
            print(line, flush=True)
        print()
    state, source = await load_state(handle)
    if as_json:
        print(state.model_dump_json(indent=2))
        return _exit_code(state)
    if args.graph is not None:
        print(render_graph(state, args.graph), end="")
        return _exit_code(state)
    print(render_trace(state))
    if source == "history":
        print(
            "\n(rebuilt from the workflow's history: no worker answered the query, "
            "or its answer is encrypted with a key this machine lacks)"
        )
    print(f"\nWeb UI: {web_ui_url(client.namespace, args.workflow_id, described.run_id)}")
    return _exit_code(state)


async def list_sagas(client: Client, args: argparse.Namespace) -> int:
    name = SAGA_STATUS_ATTRIBUTE.name
    status = SagaStatus.NEEDS_HUMAN.value if args.needs_human else args.status
    query = f'{name}="{status}"' if status else f"{name} IS NOT NULL"
    found: list[dict[str, Any]] = []
    header = "NEEDS A HUMAN FOR" if args.needs_human else "STARTED"
    header = f"{'WORKFLOW ID':40} {'SAGA STATUS':20} {'WORKFLOW':12} {header}"
    executions = client.list_workflows(query, limit=args.limit)
    # The first page before the header: an error (no SagaStatus attribute, say) is
    # then the only thing printed.
    first = await anext(aiter(executions), None)
    if args.output == "text":
        print(header)
    async for execution in _chain(first, executions):
        row: dict[str, Any] = {
            "workflow_id": execution.id,
            "run_id": execution.run_id,
            "saga_status": execution.typed_search_attributes.get(SAGA_STATUS_ATTRIBUTE),
            "workflow_status": execution.status.name if execution.status else None,
            "started_at": execution.start_time.isoformat(),
        }
        last = execution.start_time.strftime("%Y-%m-%d %H:%M:%S")
        if args.needs_human:  # what each needs: one query (or history read) per saga
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            state, _ = await load_state(handle)
            row["needs_human"] = state.needs_human
            last = ", ".join(state.needs_human) or "(being acted on)"
        if args.output == "json":
            found.append(row)
            continue
        print(
            f"{row['workflow_id']:40} {row['saga_status'] or '?':20} "
            f"{row['workflow_status'] or '?':12} {last}"
        )
    if args.output == "json":
        print(json.dumps(found, indent=2))
    else:  # the same list in the Web UI, where an operator acts on each saga
        print(f"\nWeb UI: {web_ui_list_url(client.namespace, query)}")
    return OK


async def _chain(first: Any, rest: Any) -> Any:
    """``first`` (unless None), then the rest of an async iterator."""
    if first is None:
        return
    yield first
    async for item in rest:
        yield item


async def act(client: Client, args: argparse.Namespace) -> int:
    """retry, resolve, give-up, event: one Workflow Update (or, for an event sent with
    --signal, a Signal), one line of answer."""
    handle = client.get_workflow_handle(args.workflow_id, run_id=args.run_id)
    common: dict[str, Any] = {"by": args.by, "saga": args.saga}
    if args.command == "retry" and args.arg is not None:
        common["arg"] = _json_option("--arg", args.arg)
    if args.command == "event":
        data = None if args.data is None else _json_option("--data", args.data)
        sending = send_event(handle, args.event, data, id=args.id, answer=not args.signal, **common)
    elif args.command == "retry":
        sending = retry_step(handle, args.step, **common)
    elif args.command == "resolve":
        if args.result is not None:
            common["result"] = _json_option("--result", args.result)
        sending = resolve_step(handle, args.step, note=args.note, **common)
    else:
        sending = give_up(handle, note=args.note, **common)
    try:
        answer = await asyncio.wait_for(sending, timeout=args.wait)
    except ActionRejected as err:
        raise CliError(f"{args.workflow_id}: rejected: {err}") from None
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise CliError(
            f"{args.workflow_id}: no worker answered within {args.wait} s (does one poll the "
            "saga's task queue?); the action is not withdrawn: the server delivers it when "
            "a worker runs the saga again"
        ) from None
    if answer is None:  # a Signal: sent, no answer to wait for
        print(f"{args.workflow_id}: {args.event!r} signalled")
        return OK
    print(f"{args.workflow_id}: {answer}")
    return ERROR if f": {FAILED_AGAIN}: " in answer else OK


def _json_option(option: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise CliError(f"{option} is not JSON: {err}") from None


async def audit(client: Client, args: argparse.Namespace) -> int:
    """Print what the saga's history holds in clear."""
    from ..encryption import audit_history

    handle = client.get_workflow_handle(args.workflow_id, run_id=args.run_id)
    history = await handle.fetch_history()
    found = audit_history(history.events)
    print(f"{args.workflow_id}: {found.report()}")
    return IN_CLEAR if found.in_clear else OK


async def replay_check_command(client: Client | None, args: argparse.Namespace) -> int:
    """Replay histories against the workflows named; one line per saga that would break."""
    from .._replay import histories_of
    from ._replay_check import load_workflows, replay_check

    classes = load_workflows(args.workflows)
    logging.getLogger("temporalio").setLevel(logging.CRITICAL)  # failures are the report
    histories = histories_of(
        classes,
        files=[Path(name) for name in args.file or ()],
        client=client,
        query=args.query,
        limit=args.limit,
    )
    began = time.monotonic()
    report = await replay_check(histories, args.workflows, jobs=args.jobs)
    seconds = time.monotonic() - began
    if args.output == "json":
        print(json.dumps({"replayed": report.replayed, "broken": [vars(b) for b in report.broken]}))
    else:
        for broken in report.broken:
            print(f"{broken.workflow_id}: {broken.reason}")
        noun = "history" if report.replayed == 1 else "histories"
        print(
            f"{report.replayed} {noun} replayed in {seconds:.1f} s: "
            + (f"{len(report.broken)} would break" if report.broken else "all replay")
        )
    return ERROR if report.broken else OK


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _positive(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    value = _whole_number(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (exit 2), as every error is."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items())
    parser = _Parser(
        prog="temporal-saga",
        description="Trace and find sagas on Temporal; check new code against their "
        "histories; run the codec server for the Web UI.",
        epilog=textwrap.fill(
            "Connects like the temporal CLI: TEMPORAL_ADDRESS (default localhost:7233), "
            "TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*, TEMPORAL_PROFILE. "
            "Encrypted payloads need TEMPORAL_SAGA_KEYS or TEMPORAL_SAGA_KEY_FILE. "
            "Web UI links use TEMPORAL_UI_URL (default http://localhost:8233)."
        )
        + f"\n\nexit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"temporal-saga {version('temporal-saga')}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def output(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--output",
            "-o",
            choices=["text", "json"],
            default="text",
            help="text for people (default), json for scripts",
        )

    show_cmd = commands.add_parser(
        "show",
        help="print a saga's trace (exit 3: compensated, 4: needs a human)",
        description="Print a saga's trace, from its query or, with no worker, its history.",
    )
    show_cmd.add_argument("workflow_id", nargs="?", help="the saga's workflow id")
    show_cmd.add_argument("--run-id", help="a particular run (default: the latest)")
    show_cmd.add_argument(
        "--follow", action="store_true", help="print each change until the saga ends"
    )
    show_cmd.add_argument(
        "--graph",
        choices=GRAPH_KINDS,
        help="print the saga as a picture instead: its steps as a graph, each in its state",
    )
    show_cmd.add_argument(
        "--spec",
        metavar="FILE",
        help="with --graph, no workflow id: draw a declarative saga from its JSON spec",
    )
    output(show_cmd)
    list_cmd = commands.add_parser(
        "list",
        help="list sagas by status",
        description="List sagas by their SagaStatus search attribute (sagas started with "
        "search_attributes=True, on a namespace where SagaStatus is registered).",
    )
    list_cmd.add_argument(
        "--status", choices=[s.value for s in SagaStatus], help="only sagas in this status"
    )
    list_cmd.add_argument(
        "--needs-human",
        action="store_true",
        help="only the sagas waiting for a human, with the steps each needs",
    )
    list_cmd.add_argument(
        "--limit", type=_positive, default=50, help="at most this many (default 50)"
    )
    output(list_cmd)

    def acting(command: argparse.ArgumentParser) -> None:
        """The options of a command that sends a saga an Update."""
        command.add_argument("--by", help="who acts (default: user@host)")
        command.add_argument("--saga", help="the saga's name, if several in the workflow wait")
        command.add_argument("--run-id", help="a particular run (default: the latest)")
        command.add_argument(
            "--wait",
            type=_positive,
            default=30,
            help="seconds to wait for a worker to answer (default 30)",
        )

    for command, summary in (
        ("retry", "run a failed compensation (or step after the pivot) again"),
        ("resolve", "mark a step as finished by hand"),
        ("give-up", "stop waiting: the saga ends COMPENSATION_FAILED"),
    ):
        act_cmd = commands.add_parser(
            command,
            help=f"{summary} (a saga waiting for a human)",
            description=f"For a saga in NEEDS_HUMAN: {summary}. Sent as a Workflow Update, "
            "which the saga validates before anything is recorded; prints its answer. "
            "A worker must run the saga's workflow to answer: without one, the command "
            "gives up waiting after --wait seconds, and the server still delivers the "
            "action once a worker polls the saga's task queue again.",
        )
        act_cmd.add_argument("workflow_id", help="the saga's workflow id")
        if command != "give-up":
            act_cmd.add_argument("step", help="the step's name, as `show` lists it")
        if command == "retry":
            act_cmd.add_argument(
                "--arg", help="a new argument, as JSON (default: the one it ran with)"
            )
        else:
            act_cmd.add_argument(
                "--note", required=True, help="what was done, or why (public text)"
            )
        if command == "resolve":
            act_cmd.add_argument(
                "--result", help="the step's result, as JSON, for the steps after it"
            )
        acting(act_cmd)
    event_cmd = commands.add_parser(
        "event",
        help="bring an event to the saga's event step that waits for it",
        description="Send EVENT to the saga in WORKFLOW_ID as a Workflow Update, which the "
        "saga validates before anything is recorded (an event no step takes, or with an "
        "invalid payload, is refused, with the reason); prints its answer. With --signal, "
        "send it as a Signal instead: no answer, a refusal is only logged and recorded "
        "in the saga's state.",
    )
    event_cmd.add_argument("workflow_id", help="the saga's workflow id")
    event_cmd.add_argument("event", help="the event's name, as the saga's event step has it")
    event_cmd.add_argument("--data", help="the event's payload, as JSON")
    event_cmd.add_argument("--id", help="this event's id: the same id sent twice counts once")
    event_cmd.add_argument("--signal", action="store_true", help="send it as a Signal")
    acting(event_cmd)
    audit_cmd = commands.add_parser(
        "audit",
        help="what a saga's history holds in clear (exit 5: payload content in clear)",
        description="Report which payloads of a saga's history are stored in clear "
        "(needs the encryption extra).",
    )
    audit_cmd.add_argument("workflow_id", help="the saga's workflow id")
    audit_cmd.add_argument("--run-id", help="a particular run (default: the latest)")
    codec_cmd = commands.add_parser(
        "codec-server",
        help="decrypt payloads for the Web UI and the temporal CLI",
        description="Serve the remote codec endpoint for the Web UI, for signed-in "
        "operators (keys: TEMPORAL_SAGA_KEYS or TEMPORAL_SAGA_KEY_FILE; token: "
        "TEMPORAL_SAGA_CODEC_TOKEN). Needs the encryption extra.",
    )
    codec_cmd.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    codec_cmd.add_argument("--port", type=_port, default=8888, help="port (default 8888)")
    codec_cmd.add_argument(
        "--origin",
        action="append",
        help="the Web UI's origin (repeat for several; default http://localhost:8233)",
    )
    check_cmd = commands.add_parser(
        "replay-check",
        help="replay histories against new workflow code; exit 1 if any would break",
        description="Replay recent histories from the server (or history files) against "
        "the workflow classes named, and print one line per saga the new code would "
        "break (a nondeterminism error names the step). Run it before deploying.",
    )
    check_cmd.add_argument(
        "workflows",
        nargs="+",
        metavar="MODULE[:CLASS]",
        help="the new code: a module (all its workflows) or one class, e.g. workflows.trip",
    )
    check_cmd.add_argument(
        "--query", help="a visibility query to narrow the histories (default: all of the types)"
    )
    check_cmd.add_argument(
        "--limit", type=_positive, default=1000, help="at most this many (default 1000)"
    )
    check_cmd.add_argument(
        "--jobs",
        type=_positive,
        default=min(4, os.cpu_count() or 1),
        help="replay in this many processes (default: the CPUs, at most 4)",
    )
    check_cmd.add_argument(
        "--file",
        action="append",
        metavar="HISTORY.json",
        help="replay this history file instead (temporal workflow show --output json); repeatable",
    )
    output(check_cmd)
    key_cmd = commands.add_parser(
        "new-key",
        help="print a fresh encryption key entry",
        description="Print a fresh AES-256 key as an id:base64key entry, for "
        "TEMPORAL_SAGA_KEYS or a key file (put the current key first).",
    )
    key_cmd.add_argument("--id", default="k1", help="the key's id, stored with each payload")
    return parser


def _encryption() -> Any:
    try:
        from .. import encryption
    except ImportError as err:
        raise CliError(
            f"encryption is not installed: {install_hint('encryption')} ({err})"
        ) from None
    return encryption


async def codec_server(args: argparse.Namespace) -> int:
    encryption = _encryption()
    codec = encryption.EncryptionCodec.from_env()
    if codec is None:
        raise CliError("no keys: set TEMPORAL_SAGA_KEYS or TEMPORAL_SAGA_KEY_FILE")
    token = os.environ.get("TEMPORAL_SAGA_CODEC_TOKEN", "")
    if not token:
        raise CliError("no token: set TEMPORAL_SAGA_CODEC_TOKEN")
    origins = args.origin or ["http://localhost:8233"]
    try:
        runner = await encryption.start_codec_server(
            codec, token, host=args.host, port=args.port, origin=origins
        )
    except OSError as err:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from err
    print(
        f"codec server on http://{args.host}:{args.port} for the Web UI at "
        f"{', '.join(origins)}; sign in at http://{args.host}:{args.port}/",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
    return OK


async def _run(args: argparse.Namespace) -> int:
    if args.command == "codec-server":
        return await codec_server(args)
    if args.command == "show" and args.spec is not None:
        return show_spec(args)  # no server needed
    if args.command == "audit":
        _encryption()  # before connecting: say what is missing first
    if args.command == "replay-check" and args.file:
        return await replay_check_command(None, args)  # no server needed
    address = os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")
    try:
        client = await connect(connect_timeout=timedelta(seconds=5))
    except RuntimeError as err:
        raise CliError(f"cannot reach Temporal at {address}: {err}") from err
    command = {
        "show": show,
        "list": list_sagas,
        "audit": audit,
        "replay-check": replay_check_command,
        "retry": act,
        "resolve": act,
        "give-up": act,
        "event": act,
    }[args.command]
    try:
        return await command(client, args)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND and args.command == "list":
            raise CliError(f"cannot list sagas: {err.message}") from err
        if args.command in ("retry", "resolve", "give-up"):
            raise CliError(f"{args.workflow_id}: cannot act: {err.message}") from err
        if err.status == RPCStatusCode.NOT_FOUND and "workflow_id" in args:
            raise CliError(
                f"no workflow {args.workflow_id!r} in namespace {client.namespace!r}"
            ) from err
        if err.status == RPCStatusCode.INVALID_ARGUMENT and args.command == "list":
            raise CliError(
                f"cannot list sagas: {err.message} (register the SagaStatus search "
                "attribute: temporal operator search-attribute create --name SagaStatus "
                "--type Keyword)"
            ) from err
        raise CliError(f"Temporal at {address}: {err.message}") from err
    except NotASaga as err:
        raise CliError(f"workflow {args.workflow_id!r} is not a saga ({err})") from err


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns its exit code (see ``EXIT_CODES``)."""
    parser = _parser()
    args = parser.parse_args(argv)
    misuse = _show_misuse(args) if args.command == "show" else None
    if misuse is not None:
        parser.error(misuse)
    try:
        if args.command == "new-key":
            print(_encryption().new_key(args.id))
            return OK
        return asyncio.run(_run(args))
    except (CliError, ValueError) as err:  # ValueError: malformed or unreadable keys
        print(f"temporal-saga: {err}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        return 130


def entry_point() -> NoReturn:
    """The ``temporal-saga`` console script."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: the SDK can crash there (sdk-python issue 300)
