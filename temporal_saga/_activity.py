"""Helpers for code running inside an activity of a saga."""

from __future__ import annotations

from temporalio import activity

COMPENSATION_SUFFIX = "/compensate"


def step_activity_id(saga: str, step: str) -> str:
    """The activity id a saga gives a step (its compensation's adds a suffix)."""
    return f"{saga}/{step}"


def idempotency_key() -> str:
    """A key for the current saga step, for the service to deduplicate on.

    Inside a step's activity it is the same on every retry of that step, and inside
    the step's compensation it is the same as the step's, so a compensation can find
    what an uncertain step (one that timed out) did, and a service can refuse a
    booking that arrives after its cancellation. It is unique per workflow run, saga
    and step.

    Raises:
        RuntimeError: Not called from inside an activity.
    """
    info = activity.info()
    step = info.activity_id.removesuffix(COMPENSATION_SUFFIX)
    return f"{info.workflow_id}/{info.workflow_run_id}/{step}"
