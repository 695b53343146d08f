"""Every error temporal-saga raises, in one place.

The hierarchy::

    Exception
    ├── temporalio.exceptions.ApplicationError
    │   ├── SagaFailed              the saga failed and was compensated (fails the workflow)
    │   └── SagaDefinitionError     (also a ValueError) the saga is ill-formed: duplicate
    │                               names, unknown or cyclic dependencies, bad options
    └── TypeError                   a non-activity where an activity belongs, a bad option type

Both subclasses of ``ApplicationError`` are non-retryable: raised inside a workflow they
fail the workflow with a readable reason instead of making its workflow task retry
forever, which is what any other exception type would do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio.exceptions import ApplicationError

if TYPE_CHECKING:
    from ._state import SagaState


class SagaDefinitionError(ApplicationError, ValueError):
    """The saga is ill-formed; raised before any activity is scheduled.

    It is a ``ValueError``, so ``except ValueError`` catches it, and a non-retryable
    ``ApplicationError``, so a workflow that defines a bad saga fails at once.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, type="SagaDefinitionError", non_retryable=True)


_NEEDS_HUMAN = "; manual intervention needed for: "


class SagaFailed(ApplicationError):
    """A step failed (or the saga was cancelled or timed out) and it was compensated.

    Raised by :meth:`temporal_saga.Saga.run`; it fails the workflow. Its details carry
    the full :class:`temporal_saga.SagaState` (each step's outcome and each
    compensation's outcome), so a client can read them back with :meth:`from_error`.

    Attributes:
        state: The saga's state when it ended.
    """

    def __init__(self, state: SagaState) -> None:
        message = f"{state.failed_step}: {state.reason}" if state.failed_step else state.reason
        if state.needs_human:
            message = f"{message}{_NEEDS_HUMAN}{', '.join(state.needs_human)}"
        super().__init__(message or "saga failed", state, type="SagaFailed", non_retryable=True)
        self.state = state

    @staticmethod
    def reason_in(message: str, failed_step: str | None) -> str:
        """The reason inside a SagaFailed message (for when its details are unreadable)."""
        if failed_step:
            message = message.removeprefix(f"{failed_step}: ")
        return message.split(_NEEDS_HUMAN)[0]

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
        """Steps whose compensation failed for good: someone must undo them by hand."""
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
        from ._state import SagaState

        seen: BaseException | None = error
        while seen is not None:
            if isinstance(seen, SagaFailed):
                return seen
            if isinstance(seen, ApplicationError) and seen.type == "SagaFailed" and seen.details:
                return cls(SagaState.model_validate(seen.details[0]))
            seen = getattr(seen, "cause", None) or seen.__cause__
        return None
