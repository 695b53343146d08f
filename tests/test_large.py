"""Large sagas on a real server: thousands of steps stay within Temporal's limits.

A 5,000-step saga that fails at its very end undoes all 5,000 steps and closes
compensated (its ``SagaFailed`` stays small, its history gives every step's
state); a 3,000-wide fan-out stays under the server's limit of pending
activities. And the check before each step that the history still has room to undo
everything, at its boundaries (no server: a saga that reaches them takes hours).
"""

from __future__ import annotations

import math
import random
import uuid

import pytest
from temporalio.client import Client, WorkflowFailureError

from temporal_saga import Saga, SagaFailed, SagaStatus, StepStatus, _scheduler
from temporal_saga._limits import HISTORY_BYTES_LIMIT, HISTORY_EVENT_LIMIT

from .conftest import WorkerFactory
from .helpers import ACTIVITIES, rebuild, starts_past_the_long_history_cap
from .scripted import JOURNAL, LargeSaga, LargeSpec, do_step, undo_step

pytestmark = pytest.mark.timeout(600)


async def test_a_5000_step_saga_that_fails_late_closes_compensated(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    spec = LargeSpec(run=str(uuid.uuid4()), width=4999, last_fails=True)
    workflow_id = f"large-{spec.run}"
    async with worker(workflows=[LargeSaga], activities=ACTIVITIES):
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                LargeSaga.run, spec, id=workflow_id, task_queue=task_queue
            )
    failure = SagaFailed.from_error(caught.value)
    assert failure is not None and failure.failed_step == "last"
    assert failure.state.status is SagaStatus.COMPENSATED
    assert failure.state.omitted_steps == 4999  # bounded: the failed step only
    undone = {e.step for e in JOURNAL[spec.run] if e.kind == "undo" and e.ok}
    assert len(undone) == 4999
    # Every step's state, from history (a query of the closed saga would replay all
    # of it first: about 30 s here, see bench/large.py).
    rebuilt = await rebuild(client, workflow_id)
    assert rebuilt.status is SagaStatus.COMPENSATED and rebuilt.failed_step == "last"
    assert len(rebuilt.steps) == 5000
    assert sum(s.status is StepStatus.COMPENSATED for s in rebuilt.steps) == 4999
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    print(f"5,000-step saga: {len(history.events)} history events")


async def test_a_3000_wide_fan_out_stays_under_the_pending_activity_limit(
    client: Client, task_queue: str, worker: WorkerFactory
) -> None:
    spec = LargeSpec(run=str(uuid.uuid4()), width=3000)
    async with worker(workflows=[LargeSaga], activities=ACTIVITIES):
        status = await client.execute_workflow(
            LargeSaga.run, spec, id=f"large-{spec.run}", task_queue=task_queue
        )
    assert status == "SUCCEEDED"
    assert len({e.step for e in JOURNAL[spec.run] if e.kind == "do" and e.ok}) == 3000
    handle = client.get_workflow_handle(f"large-{spec.run}")
    assert await starts_past_the_long_history_cap(handle) == []


# --- the history-room check before each step ------------------------------------------


class _History:
    """What ``workflow.info()`` tells the check: the history's length and size now."""

    def __init__(self, events: int, size: int) -> None:
        self.events, self.size = events, size

    def get_current_history_length(self) -> int:
        return self.events

    def get_current_history_size(self) -> int:
        return self.size


def _has_room(
    monkeypatch: pytest.MonkeyPatch,
    *,
    finished: int,
    running: int,
    undoable: int,
    compensated: bool,
    events: tuple[int, int],
    size: tuple[int, int] = (100_000, 50_000),
) -> bool:
    """Whether a saga midway (so many steps finished, running, undoable) starts one
    more step, its history at ``events`` and ``size`` (each: now, since the saga began)."""
    saga = Saga("big")
    step = saga.step("next", do_step, compensate=undo_step if compensated else None)
    at_start = _History(events[0] - events[1], size[0] - size[1])
    monkeypatch.setattr(_scheduler.workflow, "info", lambda: at_start)
    limiter = _scheduler.Limiter(500)
    limiter.finished, limiter.undoable = finished, undoable
    monkeypatch.setattr(_scheduler.workflow, "info", lambda: _History(events[0], size[0]))
    return limiter.history_has_room_for(step, others_in_flight=running)


ROOM = HISTORY_EVENT_LIMIT - 500  # the check keeps 500 events in reserve
BYTES_ROOM = HISTORY_BYTES_LIMIT - 2 * 1024 * 1024  # and 2 MiB


def test_a_step_starts_only_if_the_history_has_room_left_to_undo_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 200 steps started in 1,200 events (6 each): this one and the one in flight, and
    # the 201 compensations with a quarter more, 253.25 steps at 6 events.
    midway = {"finished": 199, "running": 1, "undoable": 200, "compensated": True}
    need = 6 * (2 + 1.25 * 201)
    last = math.floor(ROOM - need)
    assert _has_room(monkeypatch, **midway, events=(last, 1_200))
    assert not _has_room(monkeypatch, **midway, events=(last + 1, 1_200))
    # Few events but large payloads, 10,000 bytes per step: the bytes decide.
    last = math.floor(BYTES_ROOM - 10_000 * (2 + 1.25 * 201))
    assert _has_room(monkeypatch, **midway, events=(2_000, 1_200), size=(last, 2_000_000))
    assert not _has_room(monkeypatch, **midway, events=(2_000, 1_200), size=(last + 1, 2_000_000))


def test_the_history_room_check_assumes_the_worst_case_until_steps_have_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before any step: 6 events per step (the step and its compensation, a quarter more).
    first = {"finished": 0, "running": 0, "undoable": 0, "compensated": True}
    last = math.floor(ROOM - 6 * 2.25)
    assert _has_room(monkeypatch, **first, events=(last, 0))
    assert not _has_room(monkeypatch, **first, events=(last + 1, 0))
    # 1,000 steps finished in 2,000 events (2 each): at least 3 per step all the same.
    late = {"finished": 1_000, "running": 0, "undoable": 0, "compensated": False}
    assert _has_room(monkeypatch, **late, events=(ROOM - 3, 2_000))
    assert not _has_room(monkeypatch, **late, events=(ROOM - 2, 2_000))


def test_the_quick_bound_never_lets_through_a_step_the_full_check_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``history_has_room_for_all`` lets a round of ready steps skip the full check; it
    may refuse what the check would allow, never the reverse (random states, each
    step of the round checked as the scheduler would)."""
    rng = random.Random(31)
    saga = Saga("big")
    steps = [saga.step(f"s{i}", do_step, compensate=undo_step) for i in range(40)]
    agreed = 0
    for _ in range(3_000):
        events = rng.choice([10, 500, 5_000, 20_000, 45_000])
        size = rng.choice([10_000, 1_000_000, 20_000_000, 45_000_000])
        at_start = _History(rng.randint(0, events), rng.randint(0, size))
        monkeypatch.setattr(_scheduler.workflow, "info", lambda at_start=at_start: at_start)
        limiter = _scheduler.Limiter(500)
        limiter.finished = rng.randint(0, 300)
        limiter.undoable = rng.randint(0, limiter.finished + 50)
        limiter.in_flight = rng.randint(0, 50)
        ready = rng.randint(1, 40)
        if not limiter.history_has_room_for_all(ready, (events, size)):
            continue
        agreed += 1
        now = _History(events, size)
        monkeypatch.setattr(_scheduler.workflow, "info", lambda now=now: now)
        for step in steps[:ready]:  # as _start_ready takes them
            assert limiter.history_has_room_for(step, others_in_flight=limiter.in_flight)
            limiter.in_flight += 1
            limiter.undoable += 1
    assert agreed > 100  # the bound holds often enough to be worth having
