"""How a step or compensation is called, and how its failure is read.

A step is an activity, a child workflow (a nested saga), or a Nexus operation
(``_nexus``). These helpers run inside the workflow, so they use only ``workflow.*``
APIs.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from types import FunctionType
from typing import Any, NamedTuple, TypeVar

import nexusrpc
from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    FailureError,
    NexusOperationError,
    TerminatedError,
    TimeoutError,
)

from ._errors import NoResult, SagaDefinitionError, SagaFailed, SagaTypeError
from ._nexus import NexusOperation
from ._options import ActivityOptions
from ._protocol import PublicText
from ._sdk import activity_definition, is_workflow_run_method
from ._state import StepStatus
from ._step import Activity

R = TypeVar("R")


# What each activity or workflow function is (True: a workflow), once checked: the SDK
# copies a definition each time it is asked for one, and every saga asks again for
# each of its steps. Weak keys: a sandbox may import a module anew for each run.
_CHECKED: weakref.WeakKeyDictionary[Callable[..., Any], bool] = weakref.WeakKeyDictionary()


def is_child_workflow(fn: Activity, where: str) -> bool:
    """Check ``fn`` is an activity, a workflow or a Nexus operation; True for a
    workflow."""
    if isinstance(fn, NexusOperation):
        return False  # checked when made
    if isinstance(fn, str):
        if not fn:
            raise SagaDefinitionError(f"{where}: an activity name cannot be empty")
        return False
    if isinstance(fn, FunctionType):
        checked = _CHECKED.get(fn)
        if checked is None:
            checked = _CHECKED[fn] = _check_callable(fn, where)
        return checked
    return _check_callable(fn, where)


def _check_callable(fn: Callable[..., Any], where: str) -> bool:
    if not callable(fn):
        raise SagaTypeError(f"{where}: expected an activity, got {type(fn).__name__} {fn!r}")
    if is_workflow_run_method(fn):
        return True
    definition = activity_definition(fn)
    if definition is None:
        raise SagaTypeError(
            f"{where}: {getattr(fn, '__qualname__', fn)!r} is not an activity; "
            "decorate it with @activity.defn"
        )
    if definition.name is None:
        raise SagaTypeError(f"{where}: a dynamic activity cannot be called by a saga step")
    return False


def invoke(
    fn: Activity,
    child: bool,
    args: Sequence[Any],
    *,
    name: str,
    ident: str,
    options: ActivityOptions,
) -> Awaitable[Any]:
    """Start one step or compensation: an activity, a child workflow (a nested saga),
    or a Nexus operation (``options`` do not apply to it).

    Returns what to await for its result. A plain function, not a coroutine, so each
    step in flight holds one object fewer; its caller awaits at once, so nothing is
    scheduled at another moment than before (the commands keep their order).
    """
    if isinstance(fn, NexusOperation):
        return fn.start(args, name=name, ident=ident)
    if child:
        # A child saga compensates itself when it fails; waiting for its cancellation
        # to complete keeps that true when the parent cancels it.
        return workflow.execute_child_workflow(
            fn,
            args=args,
            id=f"{workflow.info().workflow_id}/{ident}",
            task_queue=options.get("task_queue"),
            static_summary=PublicText(name),
            cancellation_type=workflow.ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
    return workflow.start_activity(
        fn, args=args, summary=PublicText(name), activity_id=ident, **options
    )


class Outcome(NamedTuple):
    """How a step (or compensation) that did not succeed ended."""

    status: StepStatus
    uncertain: bool  # it may have taken effect: compensate it
    message: str
    nested_needs_human: list[str]  # a nested saga's steps that it could not undo


def describe(error: BaseException) -> Outcome:
    """Classify a step's failure."""
    cause = (
        error.cause
        if isinstance(error, ActivityError | ChildWorkflowError | NexusOperationError)
        else error
    )
    if isinstance(cause, nexusrpc.HandlerError) and isinstance(cause.__cause__, FailureError):
        cause = cause.__cause__  # a Nexus handler's own error: its message
    if isinstance(cause, TimeoutError):
        kind = cause.type.name if cause.type is not None else "unknown"
        return Outcome(StepStatus.FAILED, True, f"timed out ({kind})", [])
    if isinstance(cause, CancelledError | asyncio.CancelledError):
        return Outcome(StepStatus.CANCELLED, True, "cancelled", [])
    if isinstance(cause, TerminatedError):
        # A terminated child never undid itself.
        return Outcome(StepStatus.FAILED, True, "terminated", [])
    if isinstance(cause, FailureError):
        nested = (
            SagaFailed.from_error(cause)
            if isinstance(error, ChildWorkflowError | NexusOperationError)
            else None
        )
        stuck = nested.needs_human if nested is not None else []
        return Outcome(StepStatus.FAILED, False, cause.message, stuck)
    return Outcome(StepStatus.FAILED, False, f"{type(cause).__name__}: {cause}", [])


def call_user_code(fn: Callable[[], R], purpose: str) -> R:
    """Call a saga's own callable (an ``arg``, a condition) inside the workflow.

    A callable that fails makes the step (or compensation) fail for good, except for
    a sandbox or determinism error: that is a bug in workflow code, so it fails the
    workflow task (retried until a fixed worker runs it), never counted as the
    business failure that would start undoing the saga.
    """
    try:
        return fn()
    except workflow.NondeterminismError:
        raise
    except NoResult as err:
        raise ApplicationError(f"could not {purpose}: {err.message}", non_retryable=True) from None
    except Exception as err:
        # The message is public (the trace shows it); the error's text may quote saga
        # data, so it goes to the details, which are encrypted.
        raise ApplicationError(
            f"could not {purpose}: {type(err).__name__}", repr(err), non_retryable=True
        ) from None


def build_args(arg: Any) -> list[Any]:
    """A step's or compensation's arguments; a callable ``arg`` is called now."""
    value = call_user_code(arg, "build its argument") if callable(arg) else arg
    return [] if value is None else [value]
