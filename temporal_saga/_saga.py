"""The scheduler: ``Saga.run`` executes the steps and, if need be, undoes them.

Everything here runs inside a workflow, so it stays deterministic: workflow time,
``workflow.wait`` instead of ``asyncio.wait``, tasks created in a fixed order, and
``graphlib`` (whose ready order is insertion order) for the DAG. The definition
(``Saga.step`` and the graph checks) lives in ``_definition``, the state and its
publishing in ``_publish``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine, Sequence
from datetime import timedelta
from graphlib import TopologicalSorter
from types import TracebackType
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from ._activity import COMPENSATION_SUFFIX, saga_run_id, step_activity_id
from ._calls import build_args, call_user_code, describe, invoke
from ._errors import SagaDefinitionError, SagaFailed, StepFailed
from ._limits import (
    EVENTS_PER_STEP_FLOOR,
    EVENTS_PER_STEP_WORST_CASE,
    HISTORY_BYTES_LIMIT,
    HISTORY_EVENT_LIMIT,
    LARGE_HISTORY_EVENTS,
    LARGE_HISTORY_PARALLELISM,
)
from ._operator import OperatedSaga
from ._run import run_state
from ._state import CompensationState, SagaResult, SagaStatus, StepStatus
from ._step import SAME_ARG, Step
from ._trace import CONDITION_NOT_MET, NOT_IN_THIS_VERSION, step_line

HISTORY_FULL = "saga stopped before outgrowing Temporal's history limit; split it into nested sagas"


def _next_run_number(saga: str) -> int:
    """Number this run of the saga called ``saga`` in the current workflow run (from 1)."""
    runs = run_state().runs
    runs[saga] += 1
    return runs[saga]


class Saga(OperatedSaga):
    """A saga: named steps with compensations, run as one Temporal workflow.

    Create it inside a workflow's run method, add steps with :meth:`step`, then
    ``await saga.run()``. Steps whose dependencies succeeded start at once, so
    independent steps run in parallel. If a step fails, no new step starts, the
    steps in flight are waited for (or cancelled, with ``cancel_in_flight=True``),
    and every step that took effect, or may have, is undone by its compensation in
    reverse dependency order; then ``run`` raises :class:`SagaFailed`.

    If a compensation fails for good (or a step after the pivot cannot go on), the
    saga undoes all it still can, then waits in status ``NEEDS_HUMAN`` with its
    workflow open, until operators retry or resolve what is left or give up
    (Workflow Updates ``saga_retry``, ``saga_resolve``, ``saga_give_up``; see
    ``python -m temporal_saga retry|resolve|give-up``).

    Args:
        name: The saga's name, shown in its trace.
        parallel_compensation: Run independent compensations at once (default).
            With False they run one by one, in reverse order of completion.
        cancel_in_flight: On failure, cancel the steps still running instead of
            waiting for them; their outcome is then uncertain, so they are compensated.
        timeout: Fail and compensate the saga if it has not succeeded by then
            (measured from ``run``; costs one timer in the history).
        max_parallelism: Run at most this many steps (and, when undoing, at most
            this many compensations) at once: default 500, at most 2,000, which is
            Temporal's default limit of pending activities per workflow. Above about
            1,000, one workflow activation may take longer than the 2 s the Python
            SDK allows it. Once the workflow's history passes 2,000 events, at most
            40 run at once, so that the server never has to restart a workflow
            task of a long history (it does when more than 100 events arrive
            while one runs).
        search_attributes: Keep the saga's status in the ``SagaStatus`` Keyword
            search attribute, so ``temporal workflow list --query
            'SagaStatus="NEEDS_HUMAN"'`` finds the sagas that wait for a human.
            Each status change costs one history event; the attribute must be
            registered on the namespace.
        human_timeout: How long a saga that needs a human waits for an operator
            before it ends ``COMPENSATION_FAILED`` (None, the default: as long as it
            takes; ``timedelta(0)``: it does not wait). Costs one timer.
        compensation_options: Activity options for every compensation of this saga.
        **activity_options: Activity options for every step of this saga (see
            :class:`ActivityOptions`).

    Example::

        saga = Saga("buy trip package")
        plane = saga.step("book plane ticket", book_flight, trip.flight,
                          compensate=cancel_flight)
        hotel = saga.step("book hotel room", book_hotel, trip.hotel,
                          compensate=cancel_hotel)
        await saga.run()
        return Booking(plane=plane.result, hotel=hotel.result)
    """

    # The scheduler's bookkeeping, set when run() begins.
    _running: dict[asyncio.Task[None], Step[Any]]  # steps (or compensations) in flight
    _run_id: str  # this run's part of every activity id (see _activity)
    _undoable: int  # steps started that have a compensation
    _history_at_start: tuple[int, int]  # history length and size when run() began
    _finished_count: int
    _compensation_count: int

    async def run(self) -> SagaResult:
        """Run the saga: execute the steps, and compensate if one fails.

        Also registers the ``saga_state`` query and keeps the workflow's current
        details (shown by the Web UI) set to the live trace.

        Once the saga starts undoing, a cancel of the workflow (even a second one)
        no longer interrupts it: the compensations running finish, the remaining
        ones still run, and only then does the cancel take effect.

        Returns:
            The state and every step's result, when all steps succeeded.

        Raises:
            SagaFailed: A step failed or the saga timed out; what took effect was
                compensated (``state.status`` says whether every compensation
                succeeded, or was resolved by an operator).
            SagaDefinitionError: The steps' dependencies are unknown or cyclic, or
                the saga could never fit in a workflow's history; nothing was
                scheduled.
            asyncio.CancelledError: The workflow was cancelled; what took effect was
                compensated first.
        """
        if self._started:
            raise RuntimeError(f"saga {self._name!r} has already run")
        self._resolve_graph()  # definition errors first, before anything is claimed
        cancelled = await self._begin()
        if cancelled:
            self._fail(None, "saga cancelled")
        else:
            try:
                await self._forward()
            except asyncio.CancelledError:
                cancelled = True
                self._fail(None, "saga cancelled")
        # From here the saga only winds down, where no cancel, first or second, can cut
        # the undo short.
        self._cancel_requested = cancelled
        cancelled |= await self._shielded(self._wind_down())
        if self._status is SagaStatus.SUCCEEDED:
            # Everything succeeded before a cancel could stop anything: that stands.
            return SagaResult(
                state=self.state,
                results={s.name: s._result for s in self._steps.values()},
            )
        if cancelled:
            raise asyncio.CancelledError("saga cancelled")
        raise SagaFailed(self._failure_state())

    async def _begin(self) -> bool:
        """What both forms do first: claim the saga, number its run, reset the counts,
        check SagaStatus, publish. True if the workflow was cancelled meanwhile: the
        check runs to its end regardless, and the saga then ends like one cancelled
        before its first step."""
        if self._started:
            raise RuntimeError(f"saga {self._name!r} has already run")
        self._started = True
        self._run_id = saga_run_id(self._name, _next_run_number(self._name))
        self._running = {}
        self._undoable = self._finished_count = self._compensation_count = 0
        info = workflow.info()
        self._history_at_start = info.get_current_history_length(), info.get_current_history_size()
        cancelled = await self._shielded(self._check_status_attribute())
        self._begin_publishing()
        return cancelled

    async def _shielded(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work`` to its end; True if the workflow was cancelled meanwhile.

        It runs in a task of its own, which the workflow's cancellation never reaches
        (that goes to the task running ``Saga.run``); a saga waiting for a human sees
        the cancel through ``_cancel_requested``.
        """
        task = asyncio.create_task(work)
        cancelled = False
        while not task.done():
            try:
                await workflow.wait([task])
            except asyncio.CancelledError:
                cancelled = self._cancel_requested = True
        task.result()
        return cancelled

    async def _wind_down(self) -> None:
        """Settle the steps in flight, then undo what took effect (if the saga failed)."""
        await self._drain()
        for step in self._steps.values():
            if step._outcome is StepStatus.PENDING:
                step._outcome = StepStatus.SKIPPED
                self._metrics.step_ended(StepStatus.SKIPPED)
                self._publish(step)
        if self._reason is None:
            # A failure the saga's code caught and went on from (the imperative form)
            # whose outcome is uncertain may have taken effect: undone all the same.
            for step in self._steps.values():
                if step._outcome is not StepStatus.SUCCEEDED and step._needs_compensation():
                    await self._undo(step)
            self._finish(SagaStatus.SUCCEEDED)
            return
        if not self._past_pivot:  # past the point of no return, nothing is undone
            await self._compensate()
        await self._wait_for_human()
        if self.state.needs_human:
            self._finish(SagaStatus.COMPENSATION_FAILED)
        elif self._past_pivot and self._actions:  # operators finished it
            self._finish(SagaStatus.SUCCEEDED)
        else:
            self._finish(SagaStatus.COMPENSATED)

    async def _forward(self) -> None:
        """Start every step whose dependencies succeeded, until done or failed."""
        sorter = _in_order(list(self._steps.values()), "_deps")
        ready: deque[Step[Any]] = deque()  # may start, once max_parallelism allows
        deadline: asyncio.Task[None] | None = None
        if self._timeout is not None:
            deadline = asyncio.create_task(workflow.sleep(self._timeout))
        try:
            while True:
                if self._reason is None:
                    ready.extend(sorter.get_ready())
                    while ready and len(self._running) < self._parallelism():
                        if not self._history_has_room_for(ready[0]):
                            self._fail(None, HISTORY_FULL)
                            break
                        step = ready.popleft()
                        self._undoable += step._compensate is not None
                        self._running[asyncio.create_task(self._execute(step))] = step
                if not self._running:
                    return
                waiting: list[asyncio.Task[None]] = list(self._running)
                if deadline is not None:
                    waiting.append(deadline)
                done, _ = await workflow.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is deadline:
                        deadline = None
                        self._fail(None, f"saga timed out after {self._timeout}")
                        self._cancel_in_flight_steps()
                        continue
                    step = self._running.pop(task)
                    task.result()  # a determinism error in a user callable: fail the task
                    if step._outcome in (StepStatus.SUCCEEDED, StepStatus.SKIPPED):
                        sorter.done(step)  # a step whose condition was false counts as done
                    elif self._reason is None:
                        self._fail(step, step._error or "failed")
                        if self._cancel_in_flight:
                            self._cancel_in_flight_steps()
        finally:
            if deadline is not None:
                deadline.cancel()

    def _history_has_room_for(self, step: Step[Any]) -> bool:
        """Whether starting ``step`` leaves room in the history to undo everything.

        Temporal ends a workflow whose history outgrows its limits, and a saga cut off
        there could not undo anything. So before each step the saga checks that the
        history can still take the steps in flight and the compensation of every
        step started so far, at the cost per started step seen so far (at least 3
        events, 6 until 100 steps have finished), with a quarter more for safety.
        """
        info = workflow.info()
        started = self._finished_count + len(self._running)
        # The steps in flight with this one, and the compensations of all started so far.
        undo = self._undoable + (step._compensate is not None)
        need = len(self._running) + 1 + 1.25 * undo
        early = self._finished_count < 100
        events_floor = EVENTS_PER_STEP_WORST_CASE if early else EVENTS_PER_STEP_FLOOR
        events, size = info.get_current_history_length(), info.get_current_history_size()
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

    def _parallelism(self) -> int:
        """How many steps (or compensations) may be in flight now.

        The server restarts a workflow task when more than 100 events arrive while it
        runs (``history.maximumBufferedEventsBatch``), and a restart replays the
        whole history. Cheap while the history is short; past 2,000 events a replay
        takes seconds, and restarts can follow one another until the task times
        out. So past that, at most 40 steps are in flight: their completions (2
        events each) can never fill the buffer.
        """
        if workflow.info().get_current_history_length() > LARGE_HISTORY_EVENTS:
            return min(self._max_parallelism, LARGE_HISTORY_PARALLELISM)
        return self._max_parallelism

    def _cancel_in_flight_steps(self) -> None:
        for task in self._running:
            task.cancel()

    async def _drain(self) -> None:
        """Cancel the steps in flight and wait until each one's outcome is known."""
        self._cancel_in_flight_steps()
        if self._running:
            await workflow.wait(list(self._running))
        for task in self._running:
            task.result()
        self._running.clear()

    async def _execute(self, step: Step[Any]) -> None:
        step._outcome = StepStatus.RUNNING
        step._started_at = workflow.now()
        span = self._spans.start(f"step {step.name}")
        try:
            if not step._in_this_version():
                step._outcome, step._note = StepStatus.SKIPPED, NOT_IN_THIS_VERSION
            elif step._when is not None and not call_user_code(
                step._when, "evaluate its condition"
            ):
                step._outcome, step._note = StepStatus.SKIPPED, CONDITION_NOT_MET
            else:
                self._publish(step)
                step._args = build_args(step._arg)
                step._result = await invoke(
                    step._activity,
                    step._is_child,
                    step._args,
                    name=step.shown,
                    ident=step_activity_id(self._run_id, step.name),
                    options=step._options,
                )
                step._outcome = StepStatus.SUCCEEDED
                step._note = self._public_note_of(step)
        except workflow.NondeterminismError:
            raise
        except (Exception, asyncio.CancelledError) as err:
            outcome = describe(err)
            step._outcome, step._uncertain = outcome.status, outcome.uncertain
            step._error = outcome.message
            step._nested_needs_human = outcome.nested_needs_human
        step._ended_at = workflow.now()
        step._finished = self._finished_count
        self._finished_count += 1
        self._metrics.step_ended(step._outcome)
        self._spans.end(span, step._outcome.value)
        self._publish(step)

    @staticmethod
    def _public_note_of(step: Step[Any]) -> str | None:
        if step._public_note is None:
            return None
        try:
            return str(step._public_note(step._result))
        except Exception as err:
            return f"note failed: {type(err).__name__}"

    async def _compensate(self) -> None:
        """Undo, in reverse dependency order, every step that took effect or may have."""
        self._set_status(SagaStatus.COMPENSATING)
        steps = list(self._steps.values())
        if not self._parallel_compensation:
            todo = [s for s in steps if s._needs_compensation()]
            for step in sorted(todo, key=lambda s: s._finished or 0, reverse=True):
                await self._undo(step)
            return
        # A step's compensation waits for the compensations of all steps after it.
        sorter = _in_order(steps, "_dependents")
        ready: deque[Step[Any]] = deque()
        running: dict[asyncio.Task[None], Step[Any]] = {}
        while sorter.is_active():
            for step in sorter.get_ready():
                if step._needs_compensation():
                    ready.append(step)
                else:
                    sorter.done(step)
            while ready and len(running) < self._parallelism():
                step = ready.popleft()
                running[asyncio.create_task(self._undo(step))] = step
            if running:
                done, _ = await workflow.wait(list(running), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
                    sorter.done(running.pop(task))

    async def _undo(
        self, step: Step[Any], *, args: Sequence[Any] | None = None, order: int | None = None
    ) -> None:
        """Run ``step``'s compensation; an operator's retry passes its new ``args`` and
        the ``order`` of the first try (its line in the trace)."""
        assert step._compensate is not None
        if order is None:
            order = self._compensation_count
            self._compensation_count += 1
        started = workflow.now()
        step._compensation = CompensationState(
            name=step._compensation_name, status=StepStatus.RUNNING, order=order, started_at=started
        )
        self._publish(step)
        span = self._spans.start(f"compensate {step.name}")
        error: str | None = None
        try:
            if args is None:
                same = step._compensate_arg is SAME_ARG
                args = step._args if same else build_args(step._compensate_arg)
            await invoke(
                step._compensate,
                step._compensate_is_child,
                args,
                name=step._compensation_name,
                ident=step_activity_id(self._run_id, step.name) + COMPENSATION_SUFFIX,
                options=step._compensation_options,
            )
        except workflow.NondeterminismError:
            raise
        except (Exception, asyncio.CancelledError) as err:
            error = describe(err).message
        ended = workflow.now()
        outcome = StepStatus.FAILED if error else StepStatus.SUCCEEDED
        step._compensation = step._compensation.model_copy(
            update={"status": outcome, "ended_at": ended, "error": error}
        )
        self._metrics.compensation_ended(outcome, ended - started)
        self._spans.end(span, outcome.value)
        self._publish(step)

    # --- The imperative form: `async with Saga(...) as saga:` -------------------------
    #
    # Each saga.step(...) starts at once and returns the Step, which is awaitable (its
    # result, or StepFailed). A step started after another one's await returned depends
    # on it, so the undo order follows the code's order; steps that ran side by side
    # are undone side by side. Leaving the block with an exception undoes what took
    # effect and raises SagaFailed, exactly as run() does.

    _frontier: dict[Step[Any], None]  # awaited steps no later awaited step depends on
    _seen_failures: dict[Step[Any], None]  # failed steps whose StepFailed the code got
    _slots: asyncio.Semaphore  # max_parallelism
    _body: asyncio.Task[Any] | None  # the task running the block
    _deadline: asyncio.Task[None] | None = None
    _deadline_hit = False

    async def __aenter__(self) -> Saga:
        """Start the saga; add steps inside the block, each starting at once.

        Raises:
            SagaDefinitionError: Steps were added before the block (with the imperative
                form, add them inside it).
            asyncio.CancelledError: The workflow was cancelled before the saga began.
        """
        if self._steps and not self._started:
            raise SagaDefinitionError(
                f"saga {self._name!r}: steps added before `async with`; add them inside "
                "the block, or run the saga with run()"
            )
        self._frontier, self._seen_failures = {}, {}
        self._slots = asyncio.Semaphore(self._max_parallelism)
        self._body = asyncio.current_task()
        if await self._begin():
            self._fail(None, "saga cancelled")
            await self._shielded(self._wind_down())
            raise asyncio.CancelledError("saga cancelled")
        self._in_block = True
        if self._timeout is not None:
            self._deadline = asyncio.create_task(self._expire(self._timeout))
        return self

    async def _expire(self, after: timedelta) -> None:
        await workflow.sleep(after)
        self._fail(None, f"saga timed out after {after}")
        self._deadline_hit = True
        self._cancel_in_flight_steps()
        if self._body is not None:
            self._body.cancel()  # the block's code stops at its next await

    def _start_in_block(self, step: Step[Any], *, pivot: bool) -> None:
        """Link a step added in the block to what came before it, and start it."""
        where = f"saga {self._name!r}, step {step.name!r}"
        if self._reason is not None:
            raise SagaDefinitionError(f"{where}: the saga failed; it starts no more steps")
        if self._pivot is not None and not self._past_pivot:
            raise SagaDefinitionError(
                f"{where}: starts before the pivot {self._pivot.name!r} succeeded; "
                "await the pivot first"
            )
        if pivot and self._running:
            running = ", ".join(repr(s.name) for s in self._running.values())
            raise SagaDefinitionError(
                f"{where}: the pivot starts while {running} still run; await them first"
            )
        targets = [*self._frontier, *self._named_deps(step)]
        if self._pivot is not None:  # and past it (checked above)
            self._place_after_pivot(step, self._pivot)
        self._link(step, targets)
        step._on_awaited = self._awaited
        self._step_lines.append(step_line(step, self._pivot_name))
        self._undoable += step._compensate is not None
        task = asyncio.create_task(self._run_when_a_slot_frees(step))
        task.add_done_callback(self._forget)
        self._running[task] = step
        step._task = task

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)

    async def _run_when_a_slot_frees(self, step: Step[Any]) -> None:
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:
            return  # cancelled while it waited its turn: it never started (PENDING)
        try:
            if self._reason is not None:
                return  # the saga failed while the step waited: it never starts
            if not self._history_has_room_for(step):
                self._fail(None, HISTORY_FULL)
                step._outcome, step._error = StepStatus.FAILED, HISTORY_FULL
                self._publish(step)
                return
            await self._execute(step)
        finally:
            self._slots.release()

    def _awaited(self, step: Step[Any]) -> None:
        """An await of ``step`` returned: the steps started from now on depend on it."""
        if step._outcome in (StepStatus.SUCCEEDED, StepStatus.SKIPPED):
            for dep in step._deps:
                self._frontier.pop(dep, None)
            self._frontier[step] = None
        else:
            self._seen_failures[step] = None  # the code saw it fail (and may go on)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """End the saga: wait for its steps, or undo what took effect.

        Raises:
            SagaFailed: The block raised (a step's StepFailed, or any other error), a
                step nobody awaited failed, or the saga timed out; what took effect was
                compensated first.
            asyncio.CancelledError: The workflow was cancelled; what took effect was
                compensated first.
        """
        self._in_block = False
        if self._deadline is not None:
            self._deadline.cancel()
        if isinstance(error, workflow.NondeterminismError):
            return  # a bug in workflow code: fail the workflow task, undo nothing
        cancelled = False
        if isinstance(error, asyncio.CancelledError):
            if self._deadline_hit and self._body is not None:
                self._body.uncancel()  # our own cancel, for the deadline
                cancelled = self._body.cancelling() > 0  # and the workflow's too?
            else:
                cancelled = True
                self._fail(None, "saga cancelled")
        elif isinstance(error, StepFailed) and error.step in self._steps:
            self._fail(self._steps[error.step], error.error)
        elif error is not None:
            self._fail(None, _reason_of(error))
        if not cancelled and (self._reason is None or not self._cancel_in_flight):
            # Settle what still runs: its outcome must be known before any undo.
            cancelled = await self._shielded(self._settle_block())
        self._cancel_requested = cancelled
        cancelled |= await self._shielded(self._wind_down())
        if self._status is SagaStatus.SUCCEEDED:
            return
        if cancelled:
            raise asyncio.CancelledError("saga cancelled")
        raise SagaFailed(self._failure_state()) from None

    async def _settle_block(self) -> None:
        """Wait for the steps still running; a failure nobody awaited fails the saga."""
        while self._running:
            await workflow.wait(list(self._running))
        for step in self._steps.values():
            failed = step._outcome in (StepStatus.FAILED, StepStatus.CANCELLED)
            if failed and step not in self._seen_failures and self._reason is None:
                self._fail(step, step._error or step._outcome.value)


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


def _in_order(steps: list[Step[Any]], edges: str) -> TopologicalSorter[Step[Any]] | _AllReady:
    """The order to run ``steps`` in: along ``_deps`` (forward) or ``_dependents``
    (undoing). Most sagas declare no dependencies; they skip the graph."""
    if not any(step._deps for step in steps):  # then no step has dependents either
        return _AllReady(steps)
    sorter = TopologicalSorter({step: getattr(step, edges) for step in steps})
    sorter.prepare()
    return sorter


def _reason_of(error: BaseException) -> str:
    """The public reason for a block that raised something other than StepFailed."""
    if isinstance(error, ApplicationError):
        return error.message
    # Another exception's text may quote saga data; its type is safe to show.
    return f"the saga's code raised {type(error).__name__}"
