"""The scheduler: runs a saga's steps forward and, if need be, its compensations backward.

One scheduler serves both forms and the undo, and one :class:`Limiter` decides for all
three how many activities may be in flight (``max_parallelism``, and the
history-aware cap) and whether the history has room for one more step:

* the graph form (:meth:`Scheduler.forward`) starts every step whose dependencies
  succeeded, in the graph's order;
* the imperative form (:meth:`Scheduler.start_in_block`) starts each step as the
  block's code adds it, linked to the steps whose ``await`` returned before;
* the undo (:meth:`Scheduler.compensate`) runs compensations in reverse dependency
  order (or one by one, in reverse order of completion).

It alone writes the steps' progress. Everything here runs inside a workflow, so it
stays deterministic: workflow time, ``workflow.wait`` instead of ``asyncio.wait``,
tasks created in a fixed order, and ``graphlib`` (whose ready order is insertion
order) for the DAG.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from datetime import timedelta
from graphlib import TopologicalSorter
from typing import Any

from temporalio import workflow

from ._calls import build_args, call_user_code, describe, invoke
from ._definition import SagaDefinition, forward_options
from ._errors import SagaDefinitionError
from ._events import Inbox
from ._limits import (
    EVENTS_PER_STEP_FLOOR,
    EVENTS_PER_STEP_WORST_CASE,
    HISTORY_BYTES_LIMIT,
    HISTORY_EVENT_LIMIT,
    LARGE_HISTORY_EVENTS,
    LARGE_HISTORY_PARALLELISM,
)
from ._progress import SagaProgress
from ._protocol import COMPENSATION_SUFFIX, step_activity_id
from ._publisher import Publisher
from ._state import CompensationState, SagaStatus, StepStatus
from ._step import SAME_ARG, Step
from ._trace import CONDITION_NOT_MET, NOT_IN_THIS_VERSION, duration

HISTORY_FULL = "saga stopped before outgrowing Temporal's history limit; split it into nested sagas"


class Limiter:
    """How many activities a saga may have in flight now, and whether its history has
    room for one more step; one for both forms and for undoing."""

    __slots__ = ("_history_at_start", "_max", "_waiters", "finished", "in_flight", "undoable")

    def __init__(self, max_parallelism: int) -> None:
        self._max = max_parallelism
        self.in_flight = 0  # steps (or compensations) holding a slot
        self.finished = 0  # steps that finished
        self.undoable = 0  # steps started that have a compensation
        self._waiters: deque[asyncio.Future[None]] = deque()  # the imperative form's
        self._history_at_start = history_now()

    def parallelism(self, events: int | None = None) -> int:
        """How many steps (or compensations) may be in flight now.

        The server restarts a workflow task when more than 100 events arrive while it
        runs (``history.maximumBufferedEventsBatch``), and a restart replays the
        whole history. Cheap while the history is short; past 2,000 events a replay
        takes seconds, and restarts can follow one another until the task times
        out. So past that, at most 40 steps are in flight: their completions (2
        events each) can never fill the buffer. ``events``: the history's length, if
        the caller has read it in this activation.
        """
        if events is None:
            events = workflow.info().get_current_history_length()
        if events > LARGE_HISTORY_EVENTS:
            return min(self._max, LARGE_HISTORY_PARALLELISM)
        return self._max

    def has_slot(self) -> bool:
        """Whether one more may start now (nobody waits ahead of it)."""
        return not self._waiters and self.in_flight < self.parallelism()

    def take(self) -> None:
        """Take a slot (the caller checked there is one)."""
        self.in_flight += 1

    async def acquire(self) -> None:
        """Wait for a slot, first come first served, and take it."""
        if self.has_slot():
            self.take()
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _wake took the slot for it
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # woken and cancelled at once: pass the slot on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back; the first waiter takes it."""
        self.in_flight -= 1
        while self._waiters and self.in_flight < self.parallelism():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def history_has_room_for_all(self, ready: int, history: tuple[int, int]) -> bool:
        """A quick bound: True if the history is so far from its limits that each of
        ``ready`` steps would pass :meth:`history_has_room_for` (which most sagas then
        skip). It bounds that check's figures from above: every ready step in flight
        with a compensation, at a cost per step of the whole history so far."""
        events, size = history
        need = self.in_flight + ready + 1 + 1.25 * (self.undoable + ready)
        per_step = max(EVENTS_PER_STEP_WORST_CASE, events)
        return (
            events + per_step * need <= HISTORY_EVENT_LIMIT - 500
            and size * (1 + need) <= HISTORY_BYTES_LIMIT - 2 * 1024 * 1024
        )

    def history_has_room_for(
        self, step: Step[Any], *, others_in_flight: int, history: tuple[int, int] | None = None
    ) -> bool:
        """Whether starting ``step`` leaves room in the history to undo everything.

        Temporal ends a workflow whose history outgrows its limits, and a saga cut off
        there could not undo anything. So before each step the saga checks that the
        history can still take the steps in flight and the compensation of every
        step started so far, at the cost per started step seen so far (at least 3
        events, 6 until 100 steps have finished), with a quarter more for safety.
        """
        events, size = history or history_now()
        started = self.finished + others_in_flight
        # The steps in flight with this one, and the compensations of all started so far.
        undo = self.undoable + (step._definition.compensate is not None)
        need = others_in_flight + 1 + 1.25 * undo
        early = self.finished < 100
        events_floor = EVENTS_PER_STEP_WORST_CASE if early else EVENTS_PER_STEP_FLOOR
        events_at_start, size_at_start = self._history_at_start
        return _fits(
            events,
            events - events_at_start,
            started=started,
            floor=events_floor,
            need=need,
            room=HISTORY_EVENT_LIMIT - 500,
        ) and _fits(
            size,
            size - size_at_start,
            started=started,
            floor=0,
            need=need,
            room=HISTORY_BYTES_LIMIT - 2 * 1024 * 1024,
        )


class Scheduler:
    """Runs a saga's steps and compensations, and writes what happened to them."""

    def __init__(
        self,
        definition: SagaDefinition,
        progress: SagaProgress,
        publisher: Publisher,
        inbox: Inbox,
    ) -> None:
        self._definition = definition
        self._progress = progress
        self._publisher = publisher
        self._inbox = inbox
        self.running: dict[asyncio.Task[None], Step[Any]] = {}  # steps in flight
        self._compensations = 0  # compensations started: the next one's order
        self._deadline: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None  # the graph form's loop's
        # Made as the saga begins (they read the workflow's context).
        self._run_id: str  # this run's part of every activity id (see _protocol)
        self._limiter: Limiter
        # The imperative form: awaited steps that no later awaited step depends on, and
        # failed steps whose StepFailed the block's code got.
        self._frontier: dict[Step[Any], None] = {}
        self._seen_failures: dict[Step[Any], None] = {}

    def begin(self, run_id: str) -> None:
        """The saga begins: its activity ids start with ``run_id``."""
        self._run_id = run_id
        self._limiter = Limiter(self._definition.max_parallelism)

    # --- The deadline (both forms) ---------------------------------------------------

    def start_deadline(self, on_expiry: Callable[[], None] | None = None) -> None:
        """With ``timeout=``: fail the saga when it passes, cancel its steps in flight,
        then call ``on_expiry`` (the imperative form stops its block there)."""
        timeout = self._definition.timeout
        if timeout is not None:
            self._deadline = asyncio.create_task(self._expire(timeout, on_expiry))

    async def _expire(self, after: timedelta, on_expiry: Callable[[], None] | None) -> None:
        await workflow.sleep(after)
        self._progress.fail(None, f"saga timed out after {duration(after)}")
        self.cancel_in_flight()
        if on_expiry is not None:
            on_expiry()

    def stop_deadline(self) -> bool:
        """Cancel the deadline's timer; True if the deadline had passed."""
        if self._deadline is None:
            return False
        passed = self._deadline.done()
        self._deadline.cancel()
        self._deadline = None
        return passed

    # --- Forward: the graph form -------------------------------------------------------

    async def forward(self) -> None:
        """Start every step whose dependencies succeeded, until done or failed."""
        progress, limiter = self._progress, self._limiter
        definition = self._definition
        sorter = _in_order(list(definition.by_name.values()), "_deps", linked=definition.linked)
        ready: deque[Step[Any]] = deque()  # may start, once the limiter allows
        self.start_deadline()
        try:
            while True:
                if progress.reason is None:
                    ready.extend(sorter.get_ready())
                if ready and progress.reason is None:
                    self._start_ready(ready)
                if not self.running:
                    return
                await self._a_step_done()
                for task in [task for task in self.running if task.done()]:
                    step = self.running.pop(task)
                    limiter.release()
                    task.result()  # a determinism error in a user callable: fail the task
                    outcome = step._progress.outcome
                    if outcome is StepStatus.SUCCEEDED or outcome is StepStatus.SKIPPED:
                        sorter.done(step)  # a step whose condition was false counts as done
                    elif progress.reason is None:
                        progress.fail(step, step._progress.error or "failed")
                        if self._definition.cancel_in_flight:
                            self.cancel_in_flight()
                        else:
                            self.stop_waiting_for_events()
        finally:
            self._waiter = None
            self.stop_deadline()
            # Cancelled mid-way: drain() waits for the steps still running, and nothing
            # else starts before it has.
            limiter.in_flight -= len(self.running)

    def _start_ready(self, ready: deque[Step[Any]]) -> None:
        """Start the ready steps the limiter lets start now (the graph form)."""
        limiter = self._limiter
        history = history_now()  # one reading: it changes between activations only
        allowed = limiter.parallelism(history[0])
        room_for_all = limiter.history_has_room_for_all(len(ready), history)
        while ready and limiter.in_flight < allowed:
            step = ready[0]
            if not room_for_all and not limiter.history_has_room_for(
                step, others_in_flight=limiter.in_flight, history=history
            ):
                self._progress.fail(None, HISTORY_FULL)
                return
            ready.popleft()
            limiter.take()
            limiter.undoable += step._definition.compensate is not None
            task = asyncio.create_task(self.execute(step))
            task.add_done_callback(self._step_done)
            self.running[task] = step

    def _a_step_done(self) -> asyncio.Future[None]:
        """What the graph form's loop awaits until a step is done: where
        ``workflow.wait(running, return_when=FIRST_COMPLETED)`` would return, for less
        (see _turns): each step's task wakes it from its own done callback, queued
        where that wait's would be."""
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def _step_done(self, task: asyncio.Task[None]) -> None:
        # A step the loop took as done already woke it (or was taken with one that did).
        waiter = self._waiter
        if waiter is not None and not waiter.done() and task in self.running:
            waiter.set_result(None)

    # --- Forward: the imperative form --------------------------------------------------

    def start_in_block(self, step: Step[Any]) -> None:
        """Link a step added in the block to what came before it, and start it (as soon
        as the limiter lets it). Raises if the saga cannot take the step now."""
        definition = self._definition
        where = f"saga {definition.name!r}, step {step.name!r}"
        if self._progress.reason is not None:
            raise SagaDefinitionError(f"{where}: the saga failed; it starts no more steps")
        pivot = definition.pivot
        if pivot is not None and not self._publisher.past_pivot:
            raise SagaDefinitionError(
                f"{where}: starts before the pivot {pivot.name!r} succeeded; await the pivot first"
            )
        if step._definition.pivot and self.running:
            running = ", ".join(repr(s.name) for s in self.running.values())
            raise SagaDefinitionError(
                f"{where}: the pivot starts while {running} still run; await them first"
            )
        definition.link_in_block(step, self._frontier)
        step._progress.on_awaited = self._awaited
        self._publisher.add_step(step)
        task = asyncio.create_task(self._start_when_a_slot_frees(step))
        task.add_done_callback(self._forget)
        self.running[task] = step
        step._progress.task = task

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.running.pop(task, None)

    async def _start_when_a_slot_frees(self, step: Step[Any]) -> None:
        limiter = self._limiter
        try:
            await limiter.acquire()
        except asyncio.CancelledError:
            return  # cancelled while it waited its turn: it never started (PENDING)
        try:
            if self._progress.reason is not None:
                return  # the saga failed while the step waited: it never starts
            if not limiter.history_has_room_for(step, others_in_flight=limiter.in_flight - 1):
                self._progress.fail(None, HISTORY_FULL)
                step._progress.outcome, step._progress.error = StepStatus.FAILED, HISTORY_FULL
                self._publisher.publish(step)
                return
            limiter.undoable += step._definition.compensate is not None
            await self.execute(step)
        finally:
            limiter.release()

    def _awaited(self, step: Step[Any]) -> None:
        """An await of ``step`` returned: the steps started from now on depend on it."""
        if step._progress.outcome in (StepStatus.SUCCEEDED, StepStatus.SKIPPED):
            for dep in step._deps:
                self._frontier.pop(dep, None)
            self._frontier[step] = None
        else:
            self._seen_failures[step] = None  # the code saw it fail (and may go on)

    async def settle_block(self) -> None:
        """Wait for the steps still running; a failure nobody awaited fails the saga."""
        if self._progress.reason is not None:
            self.stop_waiting_for_events()
        while self.running:
            await workflow.wait(list(self.running))
        self.note_failures()

    def note_failures(self) -> None:
        """The block's steps are settled: a failure nobody awaited fails the saga."""
        for step in self._definition.by_name.values():
            outcome = step._progress.outcome
            failed = outcome is StepStatus.FAILED or outcome is StepStatus.CANCELLED
            if failed and step not in self._seen_failures:
                self._progress.fail(step, step._progress.error or outcome.value)

    # --- Both forms ----------------------------------------------------------------------

    def cancel_in_flight(self) -> None:
        """Request the cancellation of every step in flight (or waiting for a slot)."""
        for task in self.running:
            task.cancel()

    def stop_waiting_for_events(self) -> None:
        """The saga failed: its event steps stop waiting (nobody needs their event now);
        cancelled, they are uncertain, so their compensations run."""
        for task, step in self.running.items():
            if step._definition.event is not None:
                task.cancel()

    async def drain(self) -> None:
        """Cancel the steps in flight, wait until each one's outcome is known, and mark
        the steps that never started ``SKIPPED``."""
        self.cancel_in_flight()
        if self.running:
            await workflow.wait(list(self.running))
        for task in self.running:
            task.result()
        self.running.clear()
        self.skip_pending()

    def skip_pending(self) -> None:
        """Mark the steps that never started ``SKIPPED``."""
        for step in self._definition.by_name.values():
            if step._progress.outcome is StepStatus.PENDING:
                step._progress.outcome = StepStatus.SKIPPED
                self._publisher.metrics.step_ended(StepStatus.SKIPPED)
                self._publisher.publish(step)

    async def execute(self, step: Step[Any]) -> None:
        """Run one step (or decide it is skipped) and record how it ended."""
        definition, progress, publisher = step._definition, step._progress, self._publisher
        progress.outcome = StepStatus.RUNNING
        progress.started_at = publisher.now()
        span = publisher.spans.start("step", step.name)
        try:
            if definition.versioned and not definition.in_this_version():
                progress.outcome, progress.note = StepStatus.SKIPPED, NOT_IN_THIS_VERSION
            elif definition.when is not None and not call_user_code(
                definition.when, "evaluate its condition"
            ):
                progress.outcome, progress.note = StepStatus.SKIPPED, CONDITION_NOT_MET
            elif definition.event is not None:
                progress.note = f"waiting for event {definition.event.event!r}"
                publisher.publish(step)
                progress.result = await self._inbox.wait(step, self._run_id)
                progress.outcome, progress.note = StepStatus.SUCCEEDED, None
                if definition.public_note is not None:
                    progress.note = _public_note(step)
            else:
                publisher.publish(step)
                arg = definition.arg if progress.new_arg is None else progress.new_arg[0]
                progress.args = build_args(arg)
                assert definition.activity is not None  # not an event step
                progress.result = await invoke(
                    definition.activity,
                    definition.is_child,
                    progress.args,
                    name=definition.shown,
                    ident=step_activity_id(self._run_id, step.name),
                    options=forward_options(step) if step._after_pivot else definition.options,
                )
                progress.outcome = StepStatus.SUCCEEDED
                if definition.public_note is not None:
                    progress.note = _public_note(step)
        except workflow.NondeterminismError:
            raise
        except (Exception, asyncio.CancelledError) as err:
            outcome = describe(err)
            progress.outcome, progress.uncertain = outcome.status, outcome.uncertain
            progress.error, progress.note = outcome.message, None
            progress.nested_needs_human = outcome.nested_needs_human
        progress.ended_at = publisher.now()
        progress.finished = self._limiter.finished
        self._limiter.finished += 1
        publisher.metrics.step_ended(progress.outcome)
        publisher.spans.end(span, progress.outcome)
        publisher.publish(step)

    # --- Backward ------------------------------------------------------------------------

    async def compensate(self) -> None:
        """Undo, in reverse dependency order, every step that took effect or may have."""
        self._publisher.set_status(SagaStatus.COMPENSATING)
        steps = list(self._definition.by_name.values())
        if not self._definition.parallel_compensation:
            todo = [s for s in steps if s._needs_compensation()]
            for step in sorted(todo, key=lambda s: s._progress.finished or 0, reverse=True):
                await self.undo(step)
            return
        # A step's compensation waits for the compensations of all steps after it.
        limiter = self._limiter
        sorter = _in_order(steps, "_dependents", linked=self._definition.linked)
        ready: deque[Step[Any]] = deque()
        running: dict[asyncio.Task[None], Step[Any]] = {}
        while sorter.is_active():
            for step in sorter.get_ready():
                if step._needs_compensation():
                    ready.append(step)
                else:
                    sorter.done(step)
            while ready and limiter.has_slot():
                limiter.take()
                step = ready.popleft()
                running[asyncio.create_task(self.undo(step))] = step
            if running:
                done, _ = await workflow.wait(list(running), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    limiter.release()
                    task.result()
                    sorter.done(running.pop(task))

    def settled(self) -> bool:
        """Nothing left to wait for: no step runs, none failed, none to undo."""
        return (
            not self.running
            and self._progress.reason is None
            and not any(self._uncertain(step) for step in self._definition.by_name.values())
        )

    @staticmethod
    def _uncertain(step: Step[Any]) -> bool:
        """A step that did not succeed but may have taken effect (undone all the same)."""
        return step._progress.outcome is not StepStatus.SUCCEEDED and step._needs_compensation()

    async def undo_uncertain(self) -> None:
        """A saga that succeeded all the same: undo the failures its code caught and
        went on from (the imperative form) whose outcome is uncertain."""
        for step in self._definition.by_name.values():
            if self._uncertain(step):
                await self.undo(step)

    async def undo(
        self, step: Step[Any], *, args: Sequence[Any] | None = None, order: int | None = None
    ) -> None:
        """Run ``step``'s compensation; an operator's retry passes its new ``args`` and
        the ``order`` of the first try (its line in the trace)."""
        definition, progress, publisher = step._definition, step._progress, self._publisher
        assert definition.compensate is not None
        if order is None:
            order = self._compensations
            self._compensations += 1
        started = publisher.now()
        progress.compensation = CompensationState(
            name=definition.compensation_name,
            status=StepStatus.RUNNING,
            order=order,
            started_at=started,
        )
        publisher.publish(step)
        span = publisher.spans.start("compensate", step.name)
        error: str | None = None
        try:
            if args is None:
                same = definition.compensate_arg is SAME_ARG
                args = progress.args if same else build_args(definition.compensate_arg)
            await invoke(
                definition.compensate,
                definition.compensate_is_child,
                args,
                name=definition.compensation_name,
                ident=step_activity_id(self._run_id, step.name) + COMPENSATION_SUFFIX,
                options=definition.compensation_options,
            )
        except workflow.NondeterminismError:
            raise
        except (Exception, asyncio.CancelledError) as err:
            error = describe(err).message
        ended = publisher.now()
        outcome = StepStatus.FAILED if error else StepStatus.SUCCEEDED
        progress.compensation = progress.compensation.model_copy(
            update={"status": outcome, "ended_at": ended, "error": error}
        )
        publisher.metrics.compensation_ended(outcome, ended - started)
        publisher.spans.end(span, outcome)
        publisher.publish(step)

    # --- What operators ask for (see _desk) ----------------------------------------------

    async def retry_step(self, step: Step[Any], new_arg: tuple[Any] | None) -> None:
        """Run a step after the pivot again, with ``new_arg`` (``(arg,)``) if given."""
        progress = step._progress
        if new_arg is not None:
            progress.new_arg = new_arg
        progress.uncertain, progress.error, progress.note = False, None, None
        self._inbox.forget_failed(step)
        await self.execute(step)

    async def retry_compensation(self, step: Step[Any], new_arg: tuple[Any] | None) -> None:
        """Run a step's failed compensation again, with ``new_arg`` (``(arg,)``) if given."""
        assert step._progress.compensation is not None
        args = None if new_arg is None else ([] if new_arg[0] is None else [new_arg[0]])
        await self.undo(step, args=args, order=step._progress.compensation.order)

    def resolve(self, step: Step[Any], note: str, result: tuple[Any] | None = None) -> None:
        """An operator finished the step (or its compensation) by hand; ``(result,)``:
        what they give as its result."""
        step._progress.resolved = note
        if result is not None:
            step._progress.result = result[0]
        self._publisher.publish(step)


def _public_note(step: Step[Any]) -> str:
    """The step's opt-in public note on its result (``public_note=``, which it has)."""
    public_note = step._definition.public_note
    assert public_note is not None
    try:
        return str(public_note(step._progress.result))
    except Exception as err:
        return f"note failed: {type(err).__name__}"


def history_now() -> tuple[int, int]:
    """The workflow's history as of this activation: its length (events) and size (bytes)."""
    info = workflow.info()
    return info.get_current_history_length(), info.get_current_history_size()


def _fits(used: int, since_start: int, *, started: int, floor: int, need: float, room: int) -> bool:
    """Whether ``need`` more steps fit in the history's ``room`` (events or bytes) after
    ``used``, at the cost per started step seen since the saga began (``since_start``
    over ``started``), at least ``floor``."""
    per_step = max(floor, since_start / started if started else 0)
    return used + per_step * need <= room


class _AllReady:
    """What a ``TopologicalSorter`` does for steps without dependencies, without
    building its graph: every step is ready at once, in definition order."""

    __slots__ = ("_left", "_ready")

    def __init__(self, steps: list[Step[Any]]) -> None:
        self._ready: tuple[Step[Any], ...] = tuple(steps)
        self._left = len(steps)

    def get_ready(self) -> tuple[Step[Any], ...]:
        ready, self._ready = self._ready, ()
        return ready

    def done(self, *steps: Step[Any]) -> None:
        self._left -= len(steps)

    def is_active(self) -> bool:
        return self._left > 0


def _in_order(
    steps: list[Step[Any]], edges: str, *, linked: bool
) -> TopologicalSorter[Step[Any]] | _AllReady:
    """The order to run ``steps`` in: along ``_deps`` (forward) or ``_dependents``
    (undoing). Most sagas declare no dependencies (``linked`` False): they skip the
    graph."""
    if not linked:
        return _AllReady(steps)
    sorter = TopologicalSorter({step: getattr(step, edges) for step in steps})
    sorter.prepare()
    return sorter
