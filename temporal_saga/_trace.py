"""The saga trace: the text the demo prints, ``show`` prints and the Web UI shows.

The finished format (``shared/DESIGN.md`` section 5)::

    ❗️ begin saga

    ✔️ book plane ticket
    ❌ book hotel room (no available hotel rooms)
    ✔️ buy tourist tickets

    ❗️ step failed: reverting

    ✔️ cancel plane ticket booking
    ✔️ cancel tourist ticket reservations

    ❌ end saga (no available hotel rooms)

While the saga runs, unfinished lines carry ⏳ (running) or ⬜ (not started yet).
"""

from __future__ import annotations

from ._state import SagaState, SagaStatus, StepState, StepStatus

_ICONS = {
    StepStatus.PENDING: "⬜",
    StepStatus.RUNNING: "⏳",
    StepStatus.SUCCEEDED: "✔️",
    StepStatus.FAILED: "❌",
    StepStatus.CANCELLED: "❌",
    StepStatus.SKIPPED: "⏭️",
}


def _line(icon: str, name: str, note: str | None = None) -> str:
    return f"{icon} {name} ({note})" if note else f"{icon} {name}"


def _step_line(step: StepState, pivot: str | None) -> str:
    note = "skipped" if step.outcome is StepStatus.SKIPPED else step.error
    if step.name == pivot and step.outcome is StepStatus.SUCCEEDED:
        note = "pivot: no way back"
    return _line(_ICONS[step.outcome], step.name, note)


def render_trace(state: SagaState) -> str:
    """Render a saga's state as its trace (plain text, also valid markdown).

    Args:
        state: A snapshot, from the ``saga_state`` query, a ``SagaFailed`` or history.

    Returns:
        The trace, without a trailing newline.
    """
    blocks = ["❗️ begin saga", "\n".join(_step_line(s, state.pivot) for s in state.steps)]
    if state.status is SagaStatus.SUCCEEDED:
        blocks += ["❗️ all steps succeeded", "✔️ end saga (success)"]
    elif state.reason is not None and state.past_pivot:
        blocks.append("❗️ step failed after the pivot: no way back")
        if state.status is SagaStatus.COMPENSATION_FAILED:
            blocks.append(_end_needing_human(state))
    elif state.reason is not None:
        cause = "step failed" if state.failed_step else state.reason
        blocks.append(f"❗️ {cause}: reverting")
        undone = sorted(
            (s.compensation for s in state.steps if s.compensation), key=lambda c: c.order
        )
        blocks.append(
            "\n".join(
                _line(_ICONS[c.status], c.name, c.error if c.status is StepStatus.FAILED else None)
                for c in undone
            )
        )
        if state.status is SagaStatus.COMPENSATED:
            blocks.append(f"❌ end saga ({state.reason})")
        elif state.status is SagaStatus.COMPENSATION_FAILED:
            blocks.append(_end_needing_human(state))
    return "\n\n".join(block for block in blocks if block)


def _end_needing_human(state: SagaState) -> str:
    return (
        f"❌ end saga ({state.reason}; manual intervention needed for: "
        f"{', '.join(state.needs_human)})"
    )
