"""How a saga ended, in the terms a test asserts on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._errors import SagaFailed
from .._state import SagaState, SagaStatus, StepStatus
from .._trace import render_trace


@dataclass(frozen=True)
class SagaOutcome:
    """How a saga ended (or that it waits for a human): its state, and its result
    or its failure.

    Every list of step names is in definition order, except :attr:`undone`, which is
    in the order the compensations ran.

    Attributes:
        workflow_id: The saga's workflow.
        state: The saga's final state (``saga_state`` query, else its history), or
            its state while it waits in ``NEEDS_HUMAN`` (the workflow is open).
        result: What the workflow returned, when it succeeded.
        failure: The ``SagaFailed`` the workflow failed with, when it failed.
        error: What ended the workflow when it did not succeed: the ``SagaFailed``
            as the client received it (an ``ApplicationError``), or the SDK's
            ``CancelledError``, ``TerminatedError`` or ``TimeoutError``.
    """

    workflow_id: str
    state: SagaState
    result: Any = None
    failure: SagaFailed | None = None
    error: BaseException | None = None

    @property
    def status(self) -> SagaStatus:
        """Where the saga ended: ``SUCCEEDED``, ``COMPENSATED``, ``COMPENSATION_FAILED``…,
        or ``NEEDS_HUMAN`` while it waits for one."""
        return self.state.status

    @property
    def reason(self) -> str | None:
        """Why the saga was compensated (None if it succeeded)."""
        return self.state.reason

    @property
    def succeeded(self) -> list[str]:
        """The steps whose activity succeeded (undone since or not)."""
        return [s.name for s in self.state.steps if s.outcome is StepStatus.SUCCEEDED]

    @property
    def failed(self) -> list[str]:
        """The steps whose activity failed (timed-out steps included)."""
        return [s.name for s in self.state.steps if s.outcome is StepStatus.FAILED]

    @property
    def skipped(self) -> list[str]:
        """The steps that never started (a false ``when=``, or the saga failed first)."""
        return [s.name for s in self.state.steps if s.outcome is StepStatus.SKIPPED]

    @property
    def undone(self) -> list[str]:
        """The steps whose compensation succeeded, in the order the compensations ran."""
        done = [
            s
            for s in self.state.steps
            if s.compensation is not None and s.compensation.status is StepStatus.SUCCEEDED
        ]
        return [s.name for s in sorted(done, key=lambda s: s.compensation.order)]  # type: ignore[union-attr]

    @property
    def needs_human(self) -> list[str]:
        """The steps someone must finish by hand (see ``SagaState.needs_human``)."""
        return self.state.needs_human

    @property
    def trace(self) -> str:
        """The saga's trace, as ``temporal-saga show`` prints it."""
        return render_trace(self.state)
