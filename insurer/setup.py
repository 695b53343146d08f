"""The insurer's namespace and the Nexus endpoint to its worker, made with the
``temporal`` CLI as whoever runs the server would (``make demo``, the chaos soak and
the tests call it): ``python -m insurer.setup [--task-queue insurer]``."""

from __future__ import annotations

import argparse
import os
import subprocess

from temporal_saga._sdk import local_temporal_cli

from .service import INSURER_ENDPOINT, INSURER_NAMESPACE, INSURER_TASK_QUEUE


def _temporal(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [local_temporal_cli(), *args, "--address", address],
        capture_output=True,
        text=True,
        timeout=60,
    )


def ensure(address: str, *, task_queue: str = INSURER_TASK_QUEUE) -> None:
    """Make the insurer's namespace if it is missing, and point the endpoint
    ``trip-insurer`` at ``task_queue`` there (making it the first time).

    Raises:
        RuntimeError: The CLI could not, with its reason.
    """
    namespace = ["operator", "namespace"]
    if _temporal(address, *namespace, "describe", "-n", INSURER_NAMESPACE).returncode:
        made = _temporal(address, *namespace, "create", "-n", INSURER_NAMESPACE)
        if made.returncode:
            raise RuntimeError(f"could not create namespace {INSURER_NAMESPACE}: {made.stderr}")
    target = [
        *("--name", INSURER_ENDPOINT, "--target-namespace", INSURER_NAMESPACE),
        *("--target-task-queue", task_queue),
    ]
    for verb in ("update", "create"):
        done = _temporal(address, "operator", "nexus", "endpoint", verb, *target)
        if done.returncode == 0:
            return
    raise RuntimeError(f"could not make the endpoint {INSURER_ENDPOINT}: {done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-queue", default=INSURER_TASK_QUEUE)
    args = parser.parse_args()
    address = os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")
    ensure(address, task_queue=args.task_queue)
    print(f"endpoint {INSURER_ENDPOINT} → namespace {INSURER_NAMESPACE}, queue {args.task_queue}")


if __name__ == "__main__":
    main()
