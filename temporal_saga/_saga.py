"""The saga: the face users touch, which owns the parts that run it.

``Saga`` reads top-down: it declares steps into its definition (``_definition``),
and ``run()`` (or ``async with``) hands them to its scheduler (``_scheduler``), which
runs them forward and, if need be, their compensations backward; its publisher
(``_publisher``) keeps the state, the live trace and the status up to date; its
operator desk (``_desk``) waits for a human when undoing could not finish. None of the
parts inherits another; each is given what it may call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar, Unpack, overload

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from ._answer import Answerer
from ._definition import EventStepOptions, SagaDefinition, SagaOptions, StepOptions
from ._desk import OperatorDesk
from ._errors import SagaDefinitionError, SagaFailed, SagaTypeError, StepFailed
from ._events import EventWait, Inbox
from ._nexus import NexusOperation
from ._progress import SagaProgress
from ._protocol import saga_run_id
from ._publisher import Publisher
from ._scheduler import Scheduler
from ._sdk import run_state
from ._state import SagaResult, SagaState, SagaStatus
from ._step import Activity, Step
from ._turns import as_if_shielded

R = TypeVar("R")


class Saga:
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

    def __init__(self, name: str, *misplaced: Any, **options: Unpack[SagaOptions]) -> None:
        # *misplaced: a positional argument too many is refused as a SagaTypeError, not
        # a plain TypeError (which would make the workflow task retry forever).
        self._definition = SagaDefinition(name, options, misplaced=len(misplaced))
        self._progress = SagaProgress()
        self._publisher = Publisher(self._definition, self._progress)
        self._inbox = Inbox(self._definition, self._progress, self._publisher)
        self._answerer = Answerer(self._definition, self._progress, self._publisher)
        self._scheduler = Scheduler(self._definition, self._progress, self._publisher, self._inbox)
        self._desk = OperatorDesk(
            self._definition, self._progress, self._publisher, self._scheduler
        )
        self._body: asyncio.Task[Any] | None = None  # the task running the block

    @property
    def name(self) -> str:
        """The saga's name."""
        return self._definition.name

    @property
    def steps(self) -> list[Step[Any]]:
        """The steps, in definition order."""
        return list(self._definition.by_name.values())

    @property
    def state(self) -> SagaState:
        """A snapshot of the saga; also the answer to the ``saga_state`` query."""
        return self._publisher.state

    @overload
    def step(
        self,
        name: str,
        activity: Callable[..., Awaitable[R]],
        arg: Any = None,
        **options: Unpack[StepOptions],
    ) -> Step[R]: ...

    @overload
    def step(
        self, name: str, activity: Callable[..., R], arg: Any = None, **options: Unpack[StepOptions]
    ) -> Step[R]: ...

    @overload
    def step(
        self,
        name: str,
        activity: str | NexusOperation | Callable[..., Any],  # a name, Nexus, or either
        arg: Any = None,
        **options: Unpack[StepOptions],
    ) -> Step[Any]: ...

    def step(
        self,
        name: str,
        activity: Activity | None = None,
        arg: Any = None,
        *misplaced: Any,
        **options: Unpack[StepOptions],
    ) -> Step[Any]:
        """Add a step: one activity call, with an optional compensation.

        Args:
            name: The step's identity, unique within the saga: ``after=``, the
                results and the state name it, and its activity id (so its
                idempotency key) is made of it, so renaming a step breaks the
                sagas in flight (change ``label`` instead). Also the text it shows,
                unless ``label`` is given. Public text, readable without the
                encryption key: keep personal data out of it.
            activity: The ``@activity.defn`` function, an activity's name, or a
                workflow's ``@workflow.run`` method: the step is then a child
                workflow (a nested saga, which compensates itself if it fails).
            label: The text the step shows in the trace, the state and the Web UI
                (the activity's summary) instead of its name. Only display: change
                it freely while sagas run. Public text, like ``name``.
            arg: The activity's single argument. A zero-argument callable is
                called when the step starts (after its dependencies), so it can
                read their results: ``lambda: Req(date=plane.result.arrival)``.
                None calls the activity without arguments.
            compensate: The activity that undoes this step. It must be idempotent
                and succeed when there is nothing to undo.
            compensate_arg: The compensation's argument: by default the step's own
                (known even when the step's outcome is not); else a value, or a
                zero-argument callable called when the compensation starts.
            compensation_name: Name of the compensation in traces and the Web UI
                (default ``"undo <label or name>"``); display only, like ``label``.
            compensate_on_failure: Also compensate the step when it failed with an
                application error (by default such a step is assumed to have had
                no effect).
            pivot: This step is the point of no return. Every other step must come
                before it (be among its dependencies, recursively) or after it
                (depend on it). A failure before the pivot succeeded is undone
                backwards; once it succeeded, the steps after it are retried until
                they succeed (unlimited attempts unless the step sets its own
                ``retry_policy``), so they cannot declare compensations, and the
                pivot itself cannot have one.
            after: Steps (or step names) that must succeed before this one starts.
            when: A condition: a zero-argument callable, called once the step's
                dependencies have succeeded (before ``arg``), that can read their
                results: ``when=lambda: plane.result.price > 500``. False: the step
                is ``SKIPPED`` (no activity runs, nothing to undo; the trace says
                "condition not met") and counts as done for the steps after it. A
                condition that raises fails the step, like an ``arg`` that raises.
            since: A patch id (``workflow.patched``), or :func:`deprecated_patch` of one
                (step 2 of the life cycle): the step was added by a code
                change while sagas were running. A saga that reaches the step on
                code that has it runs it; a saga whose history shows it passed that
                point before the change replays without it. Without it the step is
                ``SKIPPED`` ("not in this saga's version"), so it counts as done for
                the steps after it and has nothing to undo. Decided when the step
                is due, before ``when``. See "Changing a saga while sagas run" in
                the README for the patch's life cycle.
            until: A patch id, or :func:`deprecated_patch` of one: the step is retired by
                a code change. Sagas that
                reach it on the new code skip it (as with ``since``); those whose
                history ran it replay with it, and still undo it.
            compensation_options: Activity options for this step's compensation,
                over the saga's ``compensation_options``.
            public_note: Opt in to showing something of the step's result in the
                trace, which is public text (readable without the encryption key):
                called with the result when the step succeeds, its text follows the
                step's name, ``✔️ book plane ticket (FL-0042)``. By default no
                payload content reaches the trace. A note that raises shows only
                the exception's type.
            **activity_options: Activity options for this step, over the saga's.

        Returns:
            The step, whose :attr:`Step.result` is set once it succeeded.

        Raises:
            SagaDefinitionError: A duplicate name, a step of another saga, a bad
                option (a ``ValueError``).
            TypeError: Something that is not an activity where one belongs.
        """
        return self._add(name, activity, arg, options, misplaced)

    def _add(
        self,
        name: str,
        activity: Activity | None,
        arg: Any,
        options: StepOptions | EventStepOptions,
        misplaced: tuple[Any, ...],
        *,
        event: EventWait | None = None,
    ) -> Step[Any]:
        """Declare a step (or an event step), start it in the imperative form, add it."""
        step = self._definition.declare(
            name,
            activity,
            arg,
            options,  # type: ignore[arg-type]  # an event step's are checked as such
            misplaced=len(misplaced),  # refused as a SagaTypeError (see __init__)
            adding_while_running=self._definition.in_block,
            event=event,
        )
        if self._definition.in_block:
            self._scheduler.start_in_block(step)  # may refuse it: before it counts
        self._definition.add(step)
        return step

    @overload
    def event(
        self,
        name: str,
        event: str,
        *,
        timeout: timedelta,
        result_type: type[R],
        **options: Unpack[EventStepOptions],
    ) -> Step[R]: ...

    @overload
    def event(
        self,
        name: str,
        event: str,
        *,
        timeout: timedelta,
        result_type: None = None,
        **options: Unpack[EventStepOptions],
    ) -> Step[Any]: ...

    def event(
        self,
        name: str,
        event: str | None = None,
        *misplaced: Any,
        timeout: timedelta | None = None,
        result_type: type[Any] | None = None,
        **options: Unpack[EventStepOptions],
    ) -> Step[Any]:
        """Add an event step: it succeeds when the event ``event`` reaches the saga.

        A step like the others (``after=``, ``when=``, ``since=``/``until=``, a
        compensation, the pivot; see :meth:`step`), which instead of calling an
        activity waits, from when it is due, for a sender to bring ``event``: the
        ``saga_event`` Workflow Update (the sender gets an answer) or Signal (fire
        and forget), e.g. ``temporal_saga.client.send_event`` or ``temporal-saga
        event``. Its result is the event's payload, validated as ``result_type``.

        * An event that comes before its step is due is kept for it; the same event
          ``id`` delivered twice counts once.
        * No event within ``timeout``: the step fails (``no 'payment' event within
          1 hour``) and the saga undoes what took effect; past the pivot, the saga
          waits for a human, and an operator's ``retry`` waits again.
        * The saga fails or is cancelled while the step waits: the wait stops, and
          the step, whose outcome the world may still be completing, is uncertain:
          its compensation runs.
        * An event no step will take (unknown, already received, its step ended, the
          saga failed or closed), or with an invalid payload, is refused: the
          Update's sender gets the reason; a Signal's refusal is logged and recorded
          in the saga's state (``actions``).

        Args:
            name: The step's identity, as for :meth:`step`.
            event: The event's name, as senders give it; one step per event in a saga.
            timeout: How long the step waits once it is due (one timer).
            result_type: The payload's type (a pydantic model, a dataclass, ``int``…);
                an invalid payload is refused. None: the payload as sent.
            compensate: The activity that undoes what the event stood for (a refund for
                a confirmed payment). It runs if the saga fails after the event came,
                or while the step waited.
            compensate_arg: Its argument: a value, or a zero-argument callable called
                when the compensation starts (the step's own result, if it succeeded:
                ``lambda: payment.result.id``). By default it gets none.
            **options: The other settings of :meth:`step`: ``label``, ``after``,
                ``when``, ``since``, ``until``, ``pivot``, ``compensation_name``,
                ``compensation_options``, ``public_note``.

        Returns:
            The step, whose :attr:`Step.result` is the payload once it succeeded.

        Raises:
            SagaDefinitionError: As for :meth:`step`, or another step waits for the
                same event.
            SagaTypeError: A bad event name, ``timeout`` or ``result_type``, or activity
                options (an event step calls no activity).
        """
        where = f"saga {self.name!r}, step {name!r}"
        if misplaced:
            raise SagaTypeError(
                f"{where}: event() takes the name and the event as positional arguments; "
                f"pass timeout= and the other options by keyword ({len(misplaced)} more "
                "positional given)"
            )
        wait = EventWait.checked(event, timeout, result_type, where)
        return self._add(name, None, None, options, (), event=wait)

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
        if self._definition.started:
            raise RuntimeError(f"saga {self.name!r} has already run")
        self._definition.resolve()  # definition errors first, before anything is claimed
        cancelled = await self._begin()
        if cancelled:
            self._progress.fail(None, "saga cancelled")
        else:
            try:
                await self._scheduler.forward()
            except asyncio.CancelledError:
                cancelled = True
                self._progress.fail(None, "saga cancelled")
        # From here the saga only winds down, where no cancel, first or second, can cut
        # the undo short.
        self._progress.cancel_requested = cancelled
        cancelled |= await self._shielded(self._winding_down())
        if self._progress.status is SagaStatus.SUCCEEDED:
            # Everything succeeded before a cancel could stop anything: that stands.
            steps = self._definition.by_name.values()
            return SagaResult.model_validate(
                {
                    "state": self._publisher.state_fields(),
                    "results": {s.name: s._progress.result for s in steps},
                }
            )
        if cancelled:
            raise asyncio.CancelledError("saga cancelled")
        raise SagaFailed(self._publisher.failure_state())

    async def _begin(self) -> bool:
        """What both forms do first: claim the saga, number its run, check SagaStatus,
        publish. True if the workflow was cancelled meanwhile: the check runs to its end
        regardless, and the saga then ends like one cancelled before its first step."""
        if self._definition.started:
            raise RuntimeError(f"saga {self.name!r} has already run")
        self._definition.started = True
        run = run_state()
        run.runs[self.name] += 1  # this saga's run number in the workflow run, from 1
        self._scheduler.begin(saga_run_id(self.name, run.runs[self.name]))
        # Events and early-answer Updates are taken from the start: an Update sent
        # with the workflow's start is handled once the workflow's code first waits,
        # which the check below does.
        self._inbox.open(run)
        self._answerer.open(run)
        checks = self._definition.search_attributes
        check = self._publisher.check_status_attribute() if checks else _nothing
        cancelled = await self._shielded(check)
        self._desk.open(run)
        self._publisher.begin()
        return cancelled

    async def _shielded(self, work: Coroutine[Any, Any, None] | Callable[[], None]) -> bool:
        """Run ``work`` to its end; True if the workflow was cancelled meanwhile.

        It runs in a task of its own, which the workflow's cancellation never reaches
        (that goes to the task running ``Saga.run``); a saga waiting for a human sees
        the cancel through ``cancel_requested``. Work that never waits (a plain
        callable) takes the same moments in the event loop without the task
        (``_turns.as_if_shielded``).
        """
        if callable(work):
            cancelled = await as_if_shielded(work)
            if cancelled:
                self._progress.cancel_requested = True
            return cancelled
        task = asyncio.create_task(work)
        cancelled = False
        while not task.done():
            try:
                await workflow.wait([task])
            except asyncio.CancelledError:
                cancelled = self._progress.cancel_requested = True
        task.result()
        return cancelled

    def _winding_down(self) -> Coroutine[Any, Any, None] | Callable[[], None]:
        """What winds the saga down: :meth:`_close_succeeded` when nothing is left to
        wait for (nothing runs, nothing to undo), else :meth:`_wind_down`."""
        if self._scheduler.settled():
            return self._close_succeeded
        return self._wind_down()

    def _close_succeeded(self) -> None:
        """:meth:`_wind_down` of a saga that succeeded with nothing left to wait for."""
        self._scheduler.skip_pending()
        self._publisher.finish(SagaStatus.SUCCEEDED)

    async def _wind_down(self) -> None:
        """Settle the steps in flight, then undo what took effect (if the saga failed),
        wait for a human if undoing could not finish, and close the saga."""
        scheduler, publisher, progress = self._scheduler, self._publisher, self._progress
        await scheduler.drain()
        if progress.reason is None:
            await scheduler.undo_uncertain()
            publisher.finish(SagaStatus.SUCCEEDED)
            return
        past_pivot = publisher.past_pivot
        if not past_pivot:  # past the point of no return, nothing is undone
            await scheduler.compensate()
        await self._desk.wait_for_human()
        if self.state.needs_human:
            publisher.finish(SagaStatus.COMPENSATION_FAILED)
        elif past_pivot and progress.actions:  # operators finished it
            publisher.finish(SagaStatus.SUCCEEDED)
        else:
            publisher.finish(SagaStatus.COMPENSATED)

    # --- The imperative form: `async with Saga(...) as saga:` -------------------------
    #
    # Each saga.step(...) starts at once and returns the Step, which is awaitable (its
    # result, or StepFailed). A step started after another one's await returned depends
    # on it, so the undo order follows the code's order; steps that ran side by side
    # are undone side by side. Leaving the block with an exception undoes what took
    # effect and raises SagaFailed, exactly as run() does.

    async def __aenter__(self) -> Saga:
        """Start the saga; add steps inside the block, each starting at once.

        Raises:
            SagaDefinitionError: Steps were added before the block (with the imperative
                form, add them inside it).
            asyncio.CancelledError: The workflow was cancelled before the saga began.
        """
        if self._definition.by_name and not self._definition.started:
            raise SagaDefinitionError(
                f"saga {self.name!r}: steps added before `async with`; add them inside "
                "the block, or run the saga with run()"
            )
        self._body = asyncio.current_task()
        self._definition.in_block = True  # from here its inbox keeps events for steps to come
        if await self._begin():
            self._definition.in_block = False
            self._progress.fail(None, "saga cancelled")
            await self._shielded(self._winding_down())
            raise asyncio.CancelledError("saga cancelled")
        self._scheduler.start_deadline(on_expiry=self._stop_the_block)
        return self

    def _stop_the_block(self) -> None:
        if self._body is not None:
            self._body.cancel()  # the block's code stops at its next await

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
        self._definition.in_block = False
        deadline_passed = self._scheduler.stop_deadline()
        if isinstance(error, workflow.NondeterminismError):
            return  # a bug in workflow code: fail the workflow task, undo nothing
        cancelled = False
        cause: BaseException | None = None  # what SagaFailed carries of the block's error
        if isinstance(error, asyncio.CancelledError):
            if deadline_passed and self._body is not None:
                self._body.uncancel()  # our own cancel, for the deadline
                cancelled = self._body.cancelling() > 0  # and the workflow's too?
            else:
                cancelled = True
                self._progress.fail(None, "saga cancelled")
        elif isinstance(error, StepFailed) and error.step in self._definition.by_name:
            self._progress.fail(self._definition.by_name[error.step], error.error)
        elif error is not None:
            self._progress.fail(None, _reason_of(error))
            cause = _cause_of(self.name, error)
        if not cancelled and (
            self._progress.reason is None or not self._definition.cancel_in_flight
        ):
            # Settle what still runs: its outcome must be known before any undo.
            scheduler = self._scheduler
            settle = scheduler.settle_block() if scheduler.running else scheduler.note_failures
            cancelled = await self._shielded(settle)
        self._progress.cancel_requested = cancelled
        cancelled |= await self._shielded(self._winding_down())
        if self._progress.status is SagaStatus.SUCCEEDED:
            return
        if cancelled:
            raise asyncio.CancelledError("saga cancelled")
        raise SagaFailed(self._publisher.failure_state()) from cause


def _nothing() -> None:
    """No work (``SagaStatus`` is not checked): shielded all the same, for its moments."""


def _reason_of(error: BaseException) -> str:
    """The public reason for a block that raised something other than StepFailed."""
    if isinstance(error, ApplicationError):
        return error.message
    # Another exception's text may quote saga data; its type is safe to show.
    return f"the saga's code raised {type(error).__name__}"


def _cause_of(saga: str, error: BaseException) -> ApplicationError:
    """What ``SagaFailed`` carries of an error the block raised: an ``ApplicationError``
    as it is; another one's type as the message and its text in the details, which the
    payload codec encrypts (the text may quote saga data). Its traceback goes to the
    worker's log (replay-aware: logged once)."""
    if isinstance(error, ApplicationError):
        return error
    kind = type(error).__name__
    workflow.logger.error("saga %r: its code raised %s", saga, kind, exc_info=error)
    return ApplicationError(kind, f"{kind}: {error}", type=kind, non_retryable=True)
