"""Activity options: their names, the saga's defaults, and how layers merge.

Options resolve from the most general to the most specific: library defaults, then
the ``Saga``'s, then the step's. Compensations have their own chain, so a step's
retry policy never leaks into the compensation that must undo it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, TypedDict, cast, get_type_hints

from temporalio.common import Priority, RetryPolicy
from temporalio.workflow import ActivityCancellationType

from ._errors import SagaDefinitionError, SagaTypeError


class ActivityOptions(TypedDict, total=False):
    """Every option of ``temporalio.workflow.start_activity`` that a saga lets you set.

    ``summary`` and the argument are the saga's to set (the step's name, the step's
    argument); everything else is yours, per saga, per step, and for compensations.
    """

    task_queue: str
    schedule_to_close_timeout: timedelta
    schedule_to_start_timeout: timedelta
    start_to_close_timeout: timedelta
    heartbeat_timeout: timedelta
    retry_policy: RetryPolicy
    cancellation_type: ActivityCancellationType
    priority: Priority


def _backoff(*, up_to: timedelta, attempts: int) -> RetryPolicy:
    """Retries 1 s apart, doubling up to ``up_to``; ``attempts`` in all (0: no limit)."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=up_to,
        maximum_attempts=attempts,
    )


STEP_DEFAULTS: ActivityOptions = {
    "start_to_close_timeout": timedelta(minutes=1),
    # Temporal's own default retries forever, and a saga that never fails never undoes.
    "retry_policy": _backoff(up_to=timedelta(seconds=10), attempts=3),
    # The saga must know a cancelled step's outcome before it compensates it.
    "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
}

COMPENSATION_DEFAULTS: ActivityOptions = {
    "start_to_close_timeout": timedelta(minutes=1),
    # A saga that cannot undo must not give up silently: retry until it works or a
    # non-retryable error says it never will.
    "retry_policy": _backoff(up_to=timedelta(minutes=1), attempts=0),
}

_TYPES: dict[str, Any] = get_type_hints(ActivityOptions)


def check_options(options: Mapping[str, Any], where: str) -> ActivityOptions:
    """Return ``options`` as ``ActivityOptions``, or raise naming the bad one.

    Raises:
        SagaDefinitionError: An option Temporal does not have (a ``ValueError``).
        SagaTypeError: An option of the wrong type, e.g. a timeout that is not a timedelta.
    """
    for key, value in options.items():
        expected = _TYPES.get(key)
        if expected is None:
            known = ", ".join(sorted(_TYPES))
            raise SagaDefinitionError(f"{where}: unknown activity option {key!r} (known: {known})")
        if not isinstance(value, expected):
            raise SagaTypeError(
                f"{where}: activity option {key!r} must be a {expected.__name__}, "
                f"not {type(value).__name__}"
            )
    return cast(ActivityOptions, dict(options))


def merge(*layers: ActivityOptions) -> ActivityOptions:
    """Later layers win (the server caps start-to-close at any schedule-to-close)."""
    merged: ActivityOptions = {}
    for layer in layers:
        merged.update(layer)
    return merged


def task_queue_only(options: ActivityOptions) -> ActivityOptions:
    """Just the task queue of ``options`` (a compensation runs where its step runs)."""
    return {"task_queue": options["task_queue"]} if "task_queue" in options else {}
