"""The trip-package worker: ``python worker.py [--task-queue trip-saga]
[--deployment NAME --build-id ID]``.

Connects like the ``temporal`` CLI (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, TLS,
``TEMPORAL_API_KEY``, profile files), serves the ``BuyTripPackage`` workflow, the
generic ``DeclarativeSaga`` (sagas sent as JSON) and the trip activities; on
SIGINT/SIGTERM it stops polling and lets in-flight activities finish (up to
``--grace`` seconds) before exiting. With ``--metrics-address HOST:PORT`` (or
``TEMPORAL_SAGA_METRICS_ADDRESS``) it serves Prometheus metrics there. ``--plugin
MODULE:NAME`` (or ``TEMPORAL_SAGA_WORKER_PLUGINS``, comma-separated) adds a Temporal
plugin to its client, made by calling ``NAME()``: the SDK's OpenTelemetry plugin, say,
for a span per saga, step and compensation.

With ``--deployment`` and ``--build-id`` (or ``TEMPORAL_DEPLOYMENT_NAME`` and
``TEMPORAL_WORKER_BUILD_ID``) it runs as that Worker Deployment Version, its workflows
pinned: a saga runs to its end on the version it started on, so a new version's code
never replays an older saga's history. Make a version current with ``temporal worker
deployment set-current-version --deployment-name NAME --build-id ID``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker, WorkerDeploymentConfig

from activities.ledger import describe, where
from activities.trip import ALL
from temporal_saga.client import connect
from temporal_saga.declarative import DeclarativeSaga
from workflows.group_trip import BookGroupTrip
from workflows.trip import TASK_QUEUE, BuyTripPackage

log = logging.getLogger("worker")


def deployment(name: str | None, build_id: str | None) -> WorkerDeploymentConfig | None:
    """The Worker Deployment Version to run as, sagas pinned to it; None: unversioned."""
    if not name and not build_id:
        return None
    if not name or not build_id:
        raise ValueError("--deployment and --build-id go together")
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(deployment_name=name, build_id=build_id),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


def metrics_runtime(address: str | None) -> Runtime | None:
    """A runtime that serves Prometheus metrics on ``address`` (host:port); None: none.

    The SDK's own worker metrics and the sagas' (``temporal_saga_*``) are served at
    ``http://ADDRESS/metrics``.
    """
    if not address:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))


def load_plugin(spec: str) -> Any:
    """The plugin ``MODULE:NAME`` names: ``NAME()`` (a plugin class, or a factory).

    Raises:
        ValueError: The spec is malformed, or names nothing that makes a plugin.
    """
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ValueError(f"--plugin {spec!r}: expected MODULE:NAME")
    try:
        made = getattr(importlib.import_module(module_name), name)()
    except (ImportError, AttributeError, TypeError) as err:
        raise ValueError(f"--plugin {spec!r}: {err}") from None
    if not (hasattr(made, "configure_client") and hasattr(made, "configure_worker")):
        raise ValueError(f"--plugin {spec!r}: {type(made).__name__} is not a Temporal plugin")
    return made


async def serve(
    task_queue: str,
    grace: float,
    concurrency: int,
    version: WorkerDeploymentConfig | None,
    metrics: str | None = None,
    plugins: list[Any] | None = None,
) -> None:
    client = await connect(
        connect_timeout=timedelta(seconds=10),
        runtime=metrics_runtime(metrics),
        plugins=plugins or [],
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # The activities are plain functions: they run in this thread pool.
    with ThreadPoolExecutor(max_workers=concurrency) as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[BuyTripPackage, BookGroupTrip, DeclarativeSaga],
            activities=ALL,
            activity_executor=executor,
            max_concurrent_activities=concurrency,
            graceful_shutdown_timeout=timedelta(seconds=grace),
            deployment_config=version,
        ):
            log.info(
                "serving task queue %r at %s (namespace %r%s); services' data: %s%s",
                task_queue,
                client.service_client.config.target_host,
                client.namespace,
                f", as {version.version.to_canonical_string()}, sagas pinned" if version else "",
                describe(where()),
                f"; metrics at http://{metrics}/metrics" if metrics else "",
            )
            for plugin in plugins or []:
                log.info("plugin: %s", type(plugin).__name__)
            await stop.wait()
            log.info("stopping: in-flight activities get up to %s s to finish", grace)
    log.info("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The trip-package worker: serves the trip sagas and their services' "
        "activities. Connects like the temporal CLI (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, "
        "TEMPORAL_API_KEY, TLS settings); encrypts with TEMPORAL_SAGA_KEYS or "
        "TEMPORAL_SAGA_KEY_FILE.",
    )
    parser.add_argument(
        "--task-queue", default=TASK_QUEUE, help=f"the queue to poll (default {TASK_QUEUE})"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="on SIGINT/SIGTERM, seconds to let running activities finish (default 10)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="activities run at once (default 32)"
    )
    parser.add_argument(
        "--deployment",
        default=os.environ.get("TEMPORAL_DEPLOYMENT_NAME"),
        help="run as this Worker Deployment (with --build-id), sagas pinned to the version",
    )
    parser.add_argument(
        "--build-id",
        default=os.environ.get("TEMPORAL_WORKER_BUILD_ID"),
        help="this code's build id within --deployment",
    )
    parser.add_argument(
        "--metrics-address",
        default=os.environ.get("TEMPORAL_SAGA_METRICS_ADDRESS"),
        metavar="HOST:PORT",
        help="serve Prometheus metrics (the SDK's and the sagas') at http://HOST:PORT/metrics",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[p for p in os.environ.get("TEMPORAL_SAGA_WORKER_PLUGINS", "").split(",") if p],
        metavar="MODULE:NAME",
        help="add the Temporal plugin NAME() from MODULE to the client, e.g. "
        "temporalio.contrib.opentelemetry:OpenTelemetryPlugin; repeatable",
    )
    args = parser.parse_args()
    try:
        version = deployment(args.deployment, args.build_id)
        plugins = [load_plugin(spec) for spec in args.plugin]
    except ValueError as err:
        parser.error(str(err))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    code = 0
    try:
        asyncio.run(
            serve(
                args.task_queue,
                args.grace,
                args.concurrency,
                version,
                args.metrics_address,
                plugins,
            )
        )
    except Exception as err:
        log.error("worker failed: %s", err)
        code = 1
    # Leave without interpreter teardown: the SDK's runtime can crash there
    # (sdk-python issue 300).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
