"""What the engine keeps per workflow run: how many sagas of each name ran, and the
sagas that take operator Updates.

A replay makes a new workflow instance, so all of it starts afresh with the replay
(deterministic). It is kept on the instance, never in a module-level table keyed by
it: such a table's entries hold the sagas, and through their steps' activities the
sandbox's copy of the workflow's module, until the garbage collector has found the
instance dead, so all of that waits for the next full collection, which then come
more often (see "Third pass" in bench/README.md). Nor can every instance be weakly
referenced: a workflow class with slots only has neither a ``__dict__`` nor weak
references; its run's state goes on the SDK's own object for the run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from temporalio import workflow

_ATTRIBUTE = "_temporal_saga_run"


class RunState:
    """The engine's state for one workflow run."""

    __slots__ = ("runs", "sagas")

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()  # sagas run so far, by name
        self.sagas: list[Any] = []  # the OperatedSagas that take operator Updates


def run_state() -> RunState:
    """The current workflow run's state (made on first use)."""
    instance = workflow.instance()
    try:
        attributes = vars(instance)
    except TypeError:  # a workflow class with slots only
        attributes = vars(workflow._Runtime.current())
    state = attributes.get(_ATTRIBUTE)
    if state is None:
        state = attributes[_ATTRIBUTE] = RunState()
    return state  # type: ignore[no-any-return]
