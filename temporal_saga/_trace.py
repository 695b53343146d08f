"""The saga trace: the text the demo prints, ``show`` prints and the Web UI shows.

The finished format::

    ❗️ begin saga

    ✔️ book plane ticket
    ❌ book hotel room (no available hotel rooms)
    ✔️ buy tourist tickets

    ❗️ step failed: reverting

    ✔️ cancel plane ticket booking
    ✔️ cancel tourist ticket reservations

    ❌ end saga (no available hotel rooms)

While the saga runs, unfinished lines carry ⏳ (running) or ⬜ (not started yet).
A saga waiting for a human (``NEEDS_HUMAN``) says so after its compensations, and
lists what operators did (``👤``); a step they resolved by hand shows
``✔️ NAME (resolved by hand: NOTE)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Protocol

from ._state import CompensationState, OperatorAction, SagaState, SagaStatus, StepStatus

_ICONS = {
    StepStatus.PENDING: "⬜",
    StepStatus.RUNNING: "⏳",
    StepStatus.SUCCEEDED: "✔️",
    StepStatus.FAILED: "❌",
    StepStatus.CANCELLED: "❌",
    StepStatus.SKIPPED: "⏭️",
}


#: The note of a step whose ``when=`` condition was false.
CONDITION_NOT_MET = "condition not met"
NOT_IN_THIS_VERSION = "not in this saga's version"


def duration(span: timedelta) -> str:
    """A duration as people write it: ``2 days``, ``1 hour 30 minutes``, ``1.5 seconds``."""
    days, rest = divmod(span.total_seconds(), 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{value:g} {unit}{'' if value == 1 else 's'}"
        for value, unit in (
            (days, "day"),
            (hours, "hour"),
            (minutes, "minute"),
            (seconds, "second"),
        )
        if value
    ]
    return " ".join(parts) or "0 seconds"


def _line(icon: str, name: str, note: str | None = None) -> str:
    return f"{icon} {name} ({note})" if note else f"{icon} {name}"


class _StepLike(Protocol):
    """What a step line needs: a ``StepState``, or the engine's live ``Step``."""

    @property
    def name(self) -> str: ...
    @property
    def label(self) -> str | None: ...
    @property
    def outcome(self) -> StepStatus: ...
    @property
    def error(self) -> str | None: ...
    @property
    def note(self) -> str | None: ...
    @property
    def resolved(self) -> str | None: ...
    @property
    def compensation(self) -> CompensationState | None: ...


def _resolved(note: str) -> str:
    return f"resolved by hand: {note}"


def step_line(step: _StepLike, pivot: str | None) -> str:
    """One step's line of the trace."""
    return line_of(
        step.label or step.name,
        step.outcome,
        note=step.note,
        error=step.error,
        resolved=step.resolved if step.compensation is None else None,
        pivot=step.name == pivot,
    )


def line_of(
    shown: str,
    outcome: StepStatus,
    *,
    note: str | None,
    error: str | None,
    resolved: str | None,
    pivot: bool,
) -> str:
    """A step's line from its parts (``resolved``: an operator finished the step itself)."""
    if resolved is not None:
        return _line("✔️", shown, _resolved(resolved))
    if outcome is StepStatus.SUCCEEDED:
        if pivot:
            note = "; ".join(filter(None, ["pivot: no way back", note]))
        return f"✔️ {shown} ({note})" if note else f"✔️ {shown}"
    if outcome is StepStatus.SKIPPED:
        return _line(_ICONS[outcome], shown, note or "skipped")
    if outcome is StepStatus.RUNNING:
        return _line(_ICONS[outcome], shown, note)  # what an event step waits for
    return _line(_ICONS[outcome], shown, error)


def compensation_line(compensation: CompensationState, resolved: str | None = None) -> str:
    """One compensation's line of the trace (``resolved``: the operator's note)."""
    if resolved is not None:
        return _line("✔️", compensation.name, _resolved(resolved))
    failed = compensation.status is StepStatus.FAILED
    return _line(
        _ICONS[compensation.status], compensation.name, compensation.error if failed else None
    )


def action_line(action: OperatorAction) -> str:
    """One line for what was done while the saga waited for a human."""
    what = f"{action.action} {action.step}" if action.step else action.action
    by = f"by {action.by}" if action.by else None
    return _line("👤" if action.by else "❗️", what, "; ".join(filter(None, [action.note, by])))


# The trace of a saga that has not failed (yet), around its step lines.
_NO_FAILURE_YET = {
    SagaStatus.RUNNING: "❗️ begin saga{}",
    SagaStatus.SUCCEEDED: "❗️ begin saga{}\n\n❗️ all steps succeeded\n\n✔️ end saga (success)",
}


def trace_without_failure(step_lines: Iterable[str], status: SagaStatus) -> str | None:
    """The trace of a saga running, or succeeded, with no failure: what the live trace
    is at nearly every change, without the general case (None: another status)."""
    form = _NO_FAILURE_YET.get(status)
    if form is None:
        return None
    steps = "\n".join(step_lines)
    if status is SagaStatus.SUCCEEDED and "\n❌ " in f"\n{steps}":
        # Its code caught a step's failure and went on (the imperative form).
        form = form.replace("all steps succeeded", "saga succeeded: its code went on past ❌")
    return form.format(("\n\n" + steps) if steps else "")


def assemble_trace(
    step_lines: Iterable[str],
    compensation_lines: Iterable[str],
    *,
    status: SagaStatus,
    reason: str | None,
    failed_step: str | None,
    past_pivot: bool,
    needs_human: Sequence[str],
    action_lines: Sequence[str] = (),
) -> str:
    """The trace from its lines; the engine keeps the lines, so each update is cheap.

    ``compensation_lines`` come in the order the compensations started.
    """
    if reason is None and (text := trace_without_failure(step_lines, status)) is not None:
        return text
    steps = "\n".join(step_lines)
    blocks = ["❗️ begin saga", steps]
    human = f"❌ end saga ({reason}; manual intervention needed for: {', '.join(needs_human)})"
    waiting = [f"❗️ waiting for a human: {', '.join(needs_human)}"] if needs_human else []
    operators = ["\n".join(action_lines)] if action_lines else []
    if status is SagaStatus.SUCCEEDED:
        if reason is not None:  # failed past the pivot, and operators finished it
            blocks += ["❗️ step failed after the pivot: no way back", *operators]
        blocks += ["❗️ all steps succeeded", "✔️ end saga (success)"]
    elif reason is not None and past_pivot:
        blocks.append("❗️ step failed after the pivot: no way back")
        if status is SagaStatus.NEEDS_HUMAN:
            blocks += [*waiting, *operators]
        elif status is SagaStatus.COMPENSATION_FAILED:
            blocks += [*operators, human]
    elif status is SagaStatus.INTERRUPTED:
        # The workflow ended under the saga (terminated, timed out): say what it left.
        undone = "\n".join(compensation_lines)
        if undone:
            blocks += ["❗️ step failed: reverting", undone]
        blocks.append(human if needs_human else f"❌ end saga ({reason})")
    elif reason is not None:
        blocks.append(f"❗️ {'step failed' if failed_step else reason}: reverting")
        blocks.append("\n".join(compensation_lines))
        if status is SagaStatus.NEEDS_HUMAN:
            blocks += [*waiting, *operators]
        elif status is SagaStatus.COMPENSATED:
            blocks += [*operators, f"❌ end saga ({reason})"]
        elif status is SagaStatus.COMPENSATION_FAILED:
            blocks += [*operators, human]
    return "\n\n".join(block for block in blocks if block)


def render_trace(state: SagaState) -> str:
    """Render a saga's state as its trace (plain text, also valid markdown).

    Args:
        state: A snapshot, from the ``saga_state`` query, a ``SagaFailed`` or history.

    Returns:
        The trace, without a trailing newline.
    """
    undone = sorted(
        ((s.compensation, s.resolved) for s in state.steps if s.compensation),
        key=lambda undo: undo[0].order,
    )
    return assemble_trace(
        (step_line(s, state.pivot) for s in state.steps),
        (compensation_line(compensation, resolved) for compensation, resolved in undone),
        status=state.status,
        reason=state.reason,
        failed_step=state.failed_step,
        past_pivot=state.past_pivot,
        needs_human=state.needs_human,
        action_lines=[action_line(a) for a in state.actions],
    )
