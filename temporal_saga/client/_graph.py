"""The saga as a picture: its steps as a graph, each in its state (``show --graph``).

Two forms of one drawing, made from a :class:`SagaState` (live, rebuilt from
history, or made from a declarative spec before anything runs):

* ``mermaid``: Mermaid flowchart text, which GitHub, GitLab and most wikis draw;
* ``svg``: a self-contained SVG image, laid out here (no graph tool needed).

Each step is a box: its name, what it did, and what became of it (undone, and in
which order; its undo failed; it needs a human). An arrow runs from a step to each
step that waited for it (``after=``, or in the imperative form the steps whose
``await`` returned before it was added). A state rebuilt from the history of a saga
that succeeded knows no arrows (the history does not record them): its steps are
drawn in the order they started.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from html import escape

from .._state import SagaState, SagaStatus, StepState, StepStatus

GRAPH_KINDS = ("svg", "mermaid")

# A box's look by its kind: (fill, stroke).
_COLOURS = {
    "succeeded": ("#d4edda", "#2e7d32"),
    "undone": ("#e3e8f0", "#4a5a78"),  # by its compensation, or by hand
    "failed": ("#f8d7da", "#c62828"),
    "needs-human": ("#ffe0b2", "#e65100"),
    "running": ("#d6e9ff", "#1565c0"),
    "cancelled": ("#fff3cd", "#a67c00"),
    "waiting": ("#f1f3f5", "#868e96"),
}
_KIND_OF = {
    StepStatus.SUCCEEDED: "succeeded",
    StepStatus.FAILED: "failed",
    StepStatus.CANCELLED: "cancelled",
    StepStatus.RUNNING: "running",
    StepStatus.PENDING: "waiting",
    StepStatus.SKIPPED: "waiting",
}
_ICONS = {
    "succeeded": "✔",
    "undone": "↩",
    "failed": "✘",
    "needs-human": "⚠",
    "running": "⏳",
    "cancelled": "✘",
    "waiting": "·",
}


@dataclass(frozen=True)
class _Box:
    """One step as drawn."""

    ident: str
    title: str
    lines: tuple[str, ...]
    kind: str
    layer: int
    row: int


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _describe(step: StepState, needs_human: set[str], pivot: str | None) -> tuple[str, list[str]]:
    """A step's kind (its colour) and the lines under its name."""
    kind = _KIND_OF[step.outcome]
    said = step.outcome.value.lower()
    if step.error:
        said += f": {step.error}"
    elif step.note:
        said += f" ({step.note})"
    lines = [said]
    if step.event is not None and step.note is None:  # a waiting one's note says it
        lines.append(f"waits for event {step.event!r}")
    if step.name == pivot:
        lines.append("the pivot: no undo past it")
    undo = step.compensation
    if undo is not None:
        order = _ordinal(undo.order + 1)
        if undo.status is StepStatus.SUCCEEDED:
            kind = "undone"
            lines.append(f"undone, {order} ({undo.name})")
        elif undo.status is StepStatus.RUNNING:
            lines.append(f"undoing, {order} ({undo.name})")
        else:
            lines.append(f"undo failed: {undo.error or undo.status.value.lower()}")
    if step.resolved is not None:
        if undo is not None:
            kind = "undone"  # by hand
        lines.append(f"resolved by hand: {step.resolved}")
    if step.name in needs_human:
        kind = "needs-human"
        lines.append("needs a human")
    return kind, lines


def _layers(steps: list[StepState]) -> dict[str, int]:
    """Each step's column: one more than the latest of the steps it waited for (a spec
    with a cycle, which no saga runs, is drawn in one column)."""
    known = {step.name for step in steps}
    graph = {step.name: [name for name in step.after if name in known] for step in steps}
    layer = dict.fromkeys(graph, 0)
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError:
        return layer
    for name in order:
        if graph[name]:
            layer[name] = 1 + max(layer[dep] for dep in graph[name])
    return layer


def _boxes(state: SagaState) -> list[_Box]:
    """The steps as boxes, each in its column and row."""
    layer = _layers(state.steps)
    rows: dict[int, int] = {}
    needs_human, boxes = set(state.needs_human), []
    for index, step in enumerate(state.steps):
        kind, lines = _describe(step, needs_human, state.pivot)
        at = layer[step.name]
        rows[at] = rows.get(at, -1) + 1
        boxes.append(_Box(f"s{index}", step.label or step.name, tuple(lines), kind, at, rows[at]))
    return boxes


def _heading(state: SagaState) -> str:
    heading = f"saga {state.name}: {state.status.value}"
    if state.reason and state.status is not SagaStatus.SUCCEEDED:
        failed = f"{state.failed_step} failed: " if state.failed_step else ""
        heading += f" ({failed}{state.reason})"
    return heading


def _edges(state: SagaState, boxes: list[_Box]) -> list[tuple[_Box, _Box]]:
    by_name = {step.name: box for step, box in zip(state.steps, boxes, strict=True)}
    return [
        (by_name[name], by_name[step.name])
        for step in state.steps
        for name in step.after
        if name in by_name
    ]


def render_graph(state: SagaState, kind: str, *, heading: str | None = None) -> str:
    """The saga's picture: ``kind`` is ``"svg"`` or ``"mermaid"``; ``heading`` replaces
    the one made from the state (its name, status and reason).

    Raises:
        ValueError: An unknown ``kind``.
    """
    heading = heading or _heading(state)
    if kind == "mermaid":
        return _mermaid(state, heading)
    if kind == "svg":
        return _svg(state, heading)
    raise ValueError(f"no graph of kind {kind!r}: choose one of {', '.join(GRAPH_KINDS)}")


def _mermaid(state: SagaState, heading: str) -> str:
    def text(value: str) -> str:
        return value.replace('"', "#quot;")

    boxes = _boxes(state)
    out = ["---", f"title: {text(heading)}", "---", "flowchart LR"]
    for box in boxes:
        label = "<br/>".join([f"{_ICONS[box.kind]} {box.title}", *box.lines])
        out.append(f'  {box.ident}["{text(label)}"]:::{box.kind.replace("-", "_")}')
    out += [f"  {a.ident} --> {b.ident}" for a, b in _edges(state, boxes)]
    for kind in sorted({box.kind for box in boxes}):
        fill, stroke = _COLOURS[kind]
        out.append(f"  classDef {kind.replace('-', '_')} fill:{fill},stroke:{stroke},color:#111")
    return "\n".join(out) + "\n"


# The SVG's layout, in pixels.
_WIDTH, _LINE, _PAD, _GAP_X, _GAP_Y, _TOP = 300, 17, 10, 70, 22, 64
_CHARS = 40  # a line's characters before it wraps (a name: before it is cut)


def _svg(state: SagaState, heading: str) -> str:
    boxes = _boxes(state)
    wrapped = {
        box.ident: [part for line in box.lines for part in textwrap.wrap(line, _CHARS)]
        for box in boxes
    }
    height_of = {box.ident: _PAD * 2 + _LINE * (1 + len(wrapped[box.ident])) for box in boxes}
    tallest = max(height_of.values(), default=0)
    layers = 1 + max((box.layer for box in boxes), default=0)
    rows = 1 + max((box.row for box in boxes), default=0)
    width = max(20 + layers * (_WIDTH + _GAP_X), 20 + 8 * len(heading))
    height = _TOP + rows * (tallest + _GAP_Y) + 10

    def at(box: _Box) -> tuple[int, int]:
        return 20 + box.layer * (_WIDTH + _GAP_X), _TOP + box.row * (tallest + _GAP_Y)

    def cut(value: str) -> str:
        return escape(value if len(value) <= _CHARS else value[: _CHARS - 1] + "…")

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' "
        "markerHeight='7' orient='auto'><path d='M0,0L10,5L0,10z' fill='#555'/></marker></defs>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="20" y="30" font-size="15" font-weight="bold">{escape(heading)}</text>',
    ]
    for source, target in _edges(state, boxes):
        (x1, y1), (x2, y2) = at(source), at(target)
        y1 += height_of[source.ident] // 2
        y2 += height_of[target.ident] // 2
        x1 += _WIDTH
        middle = (x1 + x2) // 2
        out.append(
            f'<path d="M{x1},{y1} C{middle},{y1} {middle},{y2} {x2},{y2}" fill="none" '
            'stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"/>'
        )
    for box in boxes:
        x, y = at(box)
        fill, stroke = _COLOURS[box.kind]
        out.append(
            f'<g class="step {box.kind}"><title>{escape(box.title)}: '
            f"{escape('; '.join(box.lines))}</title>"
            f'<rect x="{x}" y="{y}" width="{_WIDTH}" height="{height_of[box.ident]}" rx="8" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="2"/>'
        )
        text_y = y + _PAD + 13
        out.append(
            f'<text x="{x + _PAD}" y="{text_y}" font-weight="bold">'
            f"{escape(_ICONS[box.kind])} {cut(box.title)}</text>"
        )
        for n, line in enumerate(wrapped[box.ident], start=1):
            out.append(f'<text x="{x + _PAD}" y="{text_y + n * _LINE}">{cut(line)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
