"""Every error temporal-saga raises, in one place, under one base.

The hierarchy::

    temporalio.exceptions.ApplicationError
    └── SagaError                   the base: catch it to catch any of them
        ├── SagaFailed              the saga failed and was compensated (fails the workflow)
        ├── StepFailed              a step of an ``async with`` saga failed (at its await)
        ├── SagaDefinitionError     (also a ValueError) the saga is ill-formed or misused:
        │   │                       duplicate names, unknown or cyclic dependencies, bad
        │   │                       options, a step awaited outside ``async with``
        │   └── SagaTypeError       (also a TypeError) a non-activity where an activity
        │                           belongs, an option value of the wrong type, a call
        │                           with the wrong arguments
        ├── NoResult                (also a RuntimeError) ``Step.result`` of a step that
        │                           has not succeeded
        ├── NotASaga                (also a ValueError) a workflow whose history holds no
        │                           saga (client side)
        ├── CompensatedFirst        a step's attempt that the barrier stopped: its
        │                           compensation ran first (``temporal_saga.barrier``)
        └── ActionRejected          (also a ValueError) a saga rejected an operator's
                                    retry, resolve or give-up, or an event (client
                                    side): wrong step, not waiting, unknown event...

Every one is a non-retryable ``ApplicationError``: raised inside a workflow it fails
the workflow (or, raised by a saga's own callable, the step) at once, with a one-line
reason, instead of making its workflow task retry forever, which is what any other
exception type would do. The client-side ones (``NotASaga``, ``ActionRejected``) print
as their message alone.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from ._state import SagaState


class SagaError(ApplicationError):
    """The base of every error temporal-saga raises (see the module's docs).

    Args:
        message: One line, public: it is the workflow's failure message.
        *details: What the message must not show (payloads the codec encrypts).
    """

    def __init__(self, message: str, *details: object) -> None:
        super().__init__(message, *details, type=type(self).__name__, non_retryable=True)


class SagaDefinitionError(SagaError, ValueError):
    """The saga is ill-formed or misused; raised before any activity is scheduled.

    It is a ``ValueError``, so ``except ValueError`` catches it, and a non-retryable
    ``ApplicationError``, so a workflow that defines a bad saga fails at once.
    """


class SagaTypeError(SagaDefinitionError, TypeError):
    """Something of the wrong type where a saga expects an activity or an option value.

    A ``TypeError`` for ``except TypeError``, and a ``SagaDefinitionError``, so a workflow
    that makes this mistake fails at once instead of retrying its workflow task.
    """


class StepFailed(SagaError):
    """A step of a saga's ``async with`` block failed; raised at its ``await``.

    Catch it to go on without the step (forward recovery: try an alternative; the step
    stays ``FAILED`` in the state, and is undone if the saga fails later and its
    outcome is uncertain). Let it leave the block and the saga undoes everything that
    took effect, then raises :class:`SagaFailed`.

    Attributes:
        step: The step's name.
        error: Why it failed (the activity's error message, ``timed out (...)``...).
        uncertain: It may have taken effect (it timed out, or was cancelled).
    """

    def __init__(self, step: str, error: str, *, uncertain: bool = False) -> None:
        super().__init__(f"{step}: {error}")
        self.step = step
        self.error = error
        self.uncertain = uncertain


class NoResult(SagaError, RuntimeError):
    """``Step.result`` of a step that has not succeeded (yet)."""


class _ClientSideError(SagaError):
    """An error of the client side: it prints as its message alone."""

    def __str__(self) -> str:
        return self.message


class NotASaga(_ClientSideError, ValueError):
    """The workflow's history holds no saga (raised when rebuilding a state from it)."""


class ActionRejected(_ClientSideError, ValueError):
    """A saga rejected an operator's action or an event (its Workflow Update's
    validator did): the step does not need a human, the saga does not wait for one, a
    retry of the step runs already; no step waits for that event, its payload is
    invalid, its workflow is not running... Nothing was recorded in the saga's
    history."""


_NEEDS_HUMAN = "; manual intervention needed for: "
_AFTER_PIVOT = " (after the pivot "
#: At most this many step names in a failure's message (the details have them all).
_NAMES_IN_MESSAGE = 20


class SagaFailed(SagaError):
    """A step failed (or the saga was cancelled or timed out) and it was compensated.

    Raised by :meth:`temporal_saga.Saga.run`; it fails the workflow. Its details carry
    the :class:`temporal_saga.SagaState` (each step's outcome and each compensation's
    outcome), so a client can read them back with :meth:`from_error`. A saga of more
    than 100 steps carries a bounded state, to stay far below Temporal's payload
    limit: the failed step and the steps needing a human, with
    :attr:`SagaState.omitted_steps` counting the others (the ``saga_state`` query and
    the state rebuilt from history have them all).

    Attributes:
        state: The saga's state when it ended.
    """

    def __init__(self, state: SagaState) -> None:
        message = f"{state.failed_step}: {state.reason}" if state.failed_step else state.reason
        if state.past_pivot:
            message = f"{message}{_AFTER_PIVOT}{state.pivot})"
        if state.needs_human:
            names = state.needs_human[:_NAMES_IN_MESSAGE]
            more = len(state.needs_human) - len(names)
            message = f"{message}{_NEEDS_HUMAN}{', '.join(names)}"
            if more:
                message = f"{message} and {more} more"
        super().__init__(message or "saga failed", state)
        self.state = state

    @staticmethod
    def parse_message(message: str, failed_step: str | None) -> tuple[str, str | None, list[str]]:
        """Read a SagaFailed message back (for when its details are unreadable).

        Returns:
            The reason, the pivot's name if the saga failed after it, and the steps
            named as needing a human (at most the first 20).
        """
        if failed_step:
            message = message.removeprefix(f"{failed_step}: ")
        message, _, human = message.partition(_NEEDS_HUMAN)
        pivot = None
        if message.endswith(")") and _AFTER_PIVOT in message:
            message, _, pivot = message[:-1].rpartition(_AFTER_PIVOT)
        names = human.rsplit(" and ", 1)[0] if human.endswith(" more") else human
        return message, pivot, names.split(", ") if names else []

    @property
    def failed_step(self) -> str | None:
        """Name of the step whose failure started the compensation (None: cancel, timeout)."""
        return self.state.failed_step

    @property
    def reason(self) -> str:
        """The original error message of the failed step."""
        return self.state.reason or ""

    @property
    def needs_human(self) -> list[str]:
        """Steps someone must finish by hand (see :attr:`SagaState.needs_human`)."""
        return self.state.needs_human

    @classmethod
    def from_error(cls, error: BaseException) -> SagaFailed | None:
        """Find the saga failure inside an error a client received, if there is one.

        Args:
            error: Typically a ``WorkflowFailureError`` from ``handle.result()``, or any
                error whose cause chain holds the ``ApplicationError`` that
                ``SagaFailed`` became on the wire.

        Returns:
            A ``SagaFailed`` rebuilt with its state, or None if no saga failure is found.
        """
        seen: BaseException | None = error
        while seen is not None:
            if isinstance(seen, SagaFailed):
                return seen
            if isinstance(seen, ApplicationError) and seen.type == "SagaFailed" and seen.details:
                return cls(SagaState.model_validate(seen.details[0]))
            seen = getattr(seen, "cause", None) or seen.__cause__
        return None


class CompensatedFirst(SagaError):
    """A step's attempt that arrived after its compensation had run (a late retry of a
    step that timed out): the barrier (``temporal_saga.barrier.guarded``) let it do
    nothing, and it fails for good, so nothing stays in effect behind the saga."""
