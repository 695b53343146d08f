"""A scripted saga for the engine's tests: each step's behaviour is data.

Its activities are the testing kit's fakes (``temporal_saga.testing.fake``), each call
doing what its argument's ``Script`` says; ``JOURNAL`` reads what they did from the
fakes' records, so a test can assert exactly which steps ran, which were undone, and
in what order. The module is imported by workflows inside the sandbox, so it holds
no test imports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from temporal_saga import Saga, SagaFailed, SagaResult, Step, StepFailed
    from temporal_saga.testing import fake


class Script(BaseModel):
    """What one activity call does."""

    run: str  # the test's own id, so parallel tests never share a journal
    step: str
    sleep: float = 0.0
    fail: str | None = None  # fail for good (non-retryable) with this message
    transient_failures: int = 0  # fail retryably this many attempts first
    always_retryable_failure: bool = False  # fail retryably on every attempt
    silent: bool = False  # never heartbeat (to trip a heartbeat timeout)
    result_bytes: int = 0  # return a result this large (to exceed the payload limit)


class ScriptedStep(BaseModel):
    name: str
    after: list[str] = Field(default_factory=list)
    sleep: float = 0.0
    fail: str | None = None
    transient_failures: int = 0
    always_retryable_failure: bool = False
    silent: bool = False
    result_bytes: int = 0
    compensate: bool = True
    compensate_on_failure: bool = False
    pivot: bool = False
    undo_sleep: float = 0.0
    undo_fail: str | None = None
    undo_transient_failures: int = 0
    start_to_close: float | None = None
    schedule_to_close: float | None = None
    heartbeat_timeout: float | None = None
    max_attempts: int | None = None
    task_queue: str | None = None  # run the step on another worker's queue
    # The compensation's argument: "script" (its own Script, the default here), "same"
    # (the library's default: the step's own argument) or "result" (reads step.result).
    undo_arg: str = "script"
    # A condition (when=): run only if step when[0]'s result equals when[1] (a step's
    # result is "do <name>"); when_raises: a condition that raises.
    when: tuple[str, str] | None = None
    when_raises: bool = False
    # The step's argument reads this step's result (to read a skipped step's).
    arg_reads: str | None = None


class ScriptedSpec(BaseModel):
    run: str
    steps: list[ScriptedStep]
    name: str = "scripted"
    parallel_compensation: bool = True
    cancel_in_flight: bool = False
    timeout: float | None = None
    max_parallelism: int | None = None
    search_attributes: bool = False
    # Seconds a saga that needs a human waits for one (None: as long as it takes). The
    # engine's tests of undoing end at once (0); those of operators set it.
    human_timeout: float | None = 0.0


@dataclass(frozen=True)
class Entry:
    """One attempt of ``do_step`` or ``undo_step``, as the tests read it."""

    kind: str  # "do" or "undo"
    step: str
    attempt: int
    started: float
    ended: float
    ok: bool
    key: str  # temporal_saga.idempotency_key() as the activity saw it


def _as_scripted(kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What the call's ``Script`` asks of the fake, in ``fake()``'s own options."""

    def options(arg: dict[str, Any]) -> dict[str, Any]:
        script = Script.model_validate(arg)
        if script.silent:  # never heartbeats: outlasts its heartbeat timeout
            return {"times_out": True}
        chosen: dict[str, Any] = {"delay": timedelta(seconds=script.sleep)}
        if script.fail:
            chosen["fails"] = script.fail
        elif script.always_retryable_failure:
            chosen["fail_times"] = 1_000_000
        else:
            chosen["fail_times"] = script.transient_failures
            chosen["returns"] = "x" * script.result_bytes or f"{kind} {script.step}"
        return chosen

    return options


# The scripted activities are the testing kit's fakes, each call scripted by its argument.
do_step = fake("do_step", per_call=_as_scripted("do"))
undo_step = fake("undo_step", per_call=_as_scripted("undo"))


class _Journal:
    """What the scripted activities did, by the test's run id (``Script.run``), in the
    order the attempts ended: read from the fakes' own records (the worker runs in
    the test process)."""

    def __getitem__(self, run: str) -> list[Entry]:
        entries = [
            Entry(kind, call.arg["step"], call.attempt, call.started, call.ended,
                  call.outcome == "succeeded", call.idempotency_key)
            for kind, fake_activity in (("do", do_step), ("undo", undo_step))
            for call in fake_activity.calls
            if call.arg["run"] == run
        ]  # fmt: skip
        return sorted(entries, key=lambda entry: entry.ended)


JOURNAL = _Journal()


def _options(step: ScriptedStep) -> dict[str, object]:
    options: dict[str, object] = {}
    if step.start_to_close is not None:
        options["start_to_close_timeout"] = timedelta(seconds=step.start_to_close)
    if step.schedule_to_close is not None:
        options["schedule_to_close_timeout"] = timedelta(seconds=step.schedule_to_close)
    if step.heartbeat_timeout is not None:
        options["heartbeat_timeout"] = timedelta(seconds=step.heartbeat_timeout)
    if step.task_queue is not None:
        options["task_queue"] = step.task_queue
    if step.max_attempts is not None:
        options["retry_policy"] = RetryPolicy(
            initial_interval=timedelta(milliseconds=100), maximum_attempts=step.max_attempts
        )
    return options


def scripted_saga(spec: ScriptedSpec) -> Saga:
    """The saga a ``ScriptedSpec`` describes (call it inside a workflow)."""
    saga = Saga(
        spec.name,
        parallel_compensation=spec.parallel_compensation,
        cancel_in_flight=spec.cancel_in_flight,
        timeout=timedelta(seconds=spec.timeout) if spec.timeout else None,
        search_attributes=spec.search_attributes,
        max_parallelism=spec.max_parallelism,
        human_timeout=None if spec.human_timeout is None else timedelta(seconds=spec.human_timeout),
        # Fast retries keep the tests quick; the attempt limit stays the default 3.
        retry_policy=RetryPolicy(
            initial_interval=timedelta(milliseconds=100),
            maximum_interval=timedelta(milliseconds=200),
            maximum_attempts=3,
        ),
        compensation_options={
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(milliseconds=100),
                maximum_interval=timedelta(milliseconds=200),
            )
        },
    )
    made: dict[str, Step[Any]] = {}
    for step in spec.steps:
        do = Script(
            run=spec.run,
            step=step.name,
            sleep=step.sleep,
            fail=step.fail,
            transient_failures=step.transient_failures,
            always_retryable_failure=step.always_retryable_failure,
            silent=step.silent,
            result_bytes=step.result_bytes,
        )
        undo = Script(
            run=spec.run,
            step=step.name,
            sleep=step.undo_sleep,
            fail=step.undo_fail,
            transient_failures=step.undo_transient_failures,
        )
        undo_options: dict[str, object] = {}
        if step.compensate:
            undo_options = {
                "compensate": undo_step,
                "compensate_on_failure": step.compensate_on_failure,
            }
            if step.undo_arg == "script":
                undo_options["compensate_arg"] = undo
            elif step.undo_arg == "result":
                undo_options["compensate_arg"] = lambda name=step.name: made[name].result
        condition = None
        if step.when is not None:
            other, wanted = step.when
            condition = lambda other=other, wanted=wanted: made[other].result == wanted  # noqa: E731
        elif step.when_raises:
            condition = lambda: 1 / 0  # noqa: E731
        arg: object = do
        if step.arg_reads is not None:
            arg = lambda do=do, read=step.arg_reads: (made[read].result, do)[1]  # noqa: E731
        made[step.name] = saga.step(
            step.name,
            do_step,
            arg,
            after=step.after,
            when=condition,
            pivot=step.pivot,
            **undo_options,  # type: ignore[arg-type]
            **_options(step),  # type: ignore[arg-type]
        )
    return saga


@workflow.defn
class ScriptedSaga:
    """Runs a ``ScriptedSpec`` through ``temporal_saga``."""

    @workflow.run
    async def run(self, spec: ScriptedSpec) -> SagaResult:
        return await scripted_saga(spec).run()


@workflow.defn
class SlottedSaga:
    """``ScriptedSaga`` in a workflow class with slots only (its instances have no
    ``__dict__``, where the engine keeps a run's sagas otherwise)."""

    __slots__ = ()

    @workflow.run
    async def run(self, spec: ScriptedSpec) -> SagaResult:
        return await scripted_saga(spec).run()


@workflow.defn
class OwnDetailsSaga:
    """Runs a ``ScriptedSpec``, then sets the workflow's current details itself."""

    @workflow.run
    async def run(self, spec: ScriptedSpec) -> SagaResult:
        result = await scripted_saga(spec).run()
        workflow.set_current_details("booked by hand-written code")
        return result


@workflow.defn
class RetryLoopSaga:
    """Runs the same saga (same name) again after each failure, as a retry loop would."""

    @workflow.run
    async def run(self, specs: list[ScriptedSpec]) -> list[str]:
        outcomes = []
        for spec in specs:
            try:
                await scripted_saga(spec).run()
                outcomes.append("SUCCEEDED")
            except SagaFailed as failure:
                outcomes.append(failure.state.status.value)
        return outcomes


@workflow.defn
class HandWrittenParallel:
    """The baseline a Temporal user would write by hand: three activities in parallel."""

    @workflow.run
    async def run(self, spec: ScriptedSpec) -> list[str]:
        return list(
            await asyncio.gather(
                *(
                    workflow.execute_activity(
                        do_step,
                        Script(run=spec.run, step=step.name, sleep=step.sleep),
                        start_to_close_timeout=timedelta(minutes=1),
                    )
                    for step in spec.steps
                )
            )
        )


class NestedSpec(BaseModel):
    run: str
    child: ScriptedSpec
    sibling_fails: bool = False
    human_timeout: float | None = 0.0  # the parent's (see ScriptedSpec)

    def parent_human_timeout(self) -> timedelta | None:
        return None if self.human_timeout is None else timedelta(seconds=self.human_timeout)


@workflow.defn
class NestedSaga:
    """A saga whose first step is a whole child saga (a ScriptedSaga workflow)."""

    @workflow.run
    async def run(self, spec: NestedSpec) -> SagaResult:
        saga = Saga("parent", human_timeout=spec.parent_human_timeout())
        saga.step(
            "child saga",
            ScriptedSaga.run,
            spec.child,
            compensate=undo_step,
            compensate_arg=Script(run=spec.run, step="child saga"),
        )
        saga.step(
            "sibling",
            do_step,
            Script(
                run=spec.run,
                step="sibling",
                sleep=1.0,
                fail="sibling failed" if spec.sibling_fails else None,
            ),
            compensate=undo_step,
        )
        return await saga.run()


@workflow.defn
class NestedBlockSaga:
    """The imperative form with a whole child saga as a step, then a sibling."""

    @workflow.run
    async def run(self, spec: NestedSpec) -> str:
        async with Saga("parent block", human_timeout=spec.parent_human_timeout()) as saga:
            await saga.step(
                "child saga",
                ScriptedSaga.run,
                spec.child,
                compensate=undo_step,
                compensate_arg=Script(run=spec.run, step="child saga"),
            )
            sibling = Script(
                run=spec.run, step="sibling", fail="sibling failed" if spec.sibling_fails else None
            )
            await saga.step("sibling", do_step, sibling, compensate=undo_step)
        return "done"


@workflow.defn
class BrokenArgumentSaga:
    """Step b's argument is built from a result that lacks the key it reads."""

    @workflow.run
    async def run(self, run: str) -> SagaResult:
        saga = Saga("broken")
        a = saga.step("a", do_step, Script(run=run, step="a"), compensate=undo_step)
        saga.step(
            "b",
            do_step,
            lambda: Script(run=run, step={"x": a.result}["missing"]),
            after=[a],
            compensate=undo_step,
        )
        return await saga.run()


@workflow.defn
class NotedSaga:
    """Steps that opt in to a public note on their result, one whose note raises."""

    @workflow.run
    async def run(self, run: str) -> SagaResult:
        saga = Saga("noted")
        saga.step("a", do_step, Script(run=run, step="a"), public_note=lambda r: f"got {r}")
        saga.step("b", do_step, Script(run=run, step="b"), public_note=lambda r: str(1 / 0))
        saga.step("c", do_step, Script(run=run, step="c"))
        saga.step(
            "d",
            do_step,
            Script(run=run, step="d"),
            after=["a", "b", "c"],
            pivot=True,
            public_note=lambda r: r.upper(),
        )
        return await saga.run()


@workflow.defn
class MisusedSaga:
    """Mistakes a user can make inside a workflow, by name."""

    @workflow.run
    async def run(self, run: str, mistake: str) -> SagaResult:
        options: dict[str, Any] = {}
        if mistake == "mistyped option":
            options["start_to_close_timeout"] = 5  # seconds, but not a timedelta
        saga = Saga("misused", **options)
        if mistake == "positional compensation":
            saga.step("a", do_step, Script(run=run, step="a"), undo_step)  # type: ignore[call-overload]
        if mistake == "block error":
            async with Saga("misused") as block:
                await block.step("a", do_step, Script(run=run, step="a"), compensate=undo_step)
                raise KeyError(f"no seat for {run}")  # its text may quote saga data
        a = saga.step("a", do_step, Script(run=run, step="a"), compensate=undo_step)
        if mistake == "result before run":
            _ = a.result
        if mistake == "await in graph form":
            await a
        if mistake == "result of a skipped step":
            skipped = saga.step("skipped", do_step, when=lambda: False)
            await saga.run()
            _ = skipped.result
        if mistake == "sandbox error":
            # Reading the wall clock is not allowed in a workflow: the sandbox refuses.
            saga.step(
                "b",
                do_step,
                lambda: Script(run=run, step=f"b at {datetime.now()}"),
                after=[a],
                compensate=undo_step,
            )
        return await saga.run()


class LargeSpec(BaseModel):
    run: str
    width: int  # independent steps
    last_fails: bool = False  # one more step, after all of them, that fails
    max_parallelism: int | None = None


@workflow.defn
class LargeSaga:
    """A fan-out of ``width`` steps, optionally closed by a step that fails late."""

    @workflow.run
    async def run(self, spec: LargeSpec) -> str:
        saga = Saga("large", max_parallelism=spec.max_parallelism)
        fan = [
            saga.step(
                f"s{i:05d}", do_step, Script(run=spec.run, step=f"s{i:05d}"), compensate=undo_step
            )
            for i in range(spec.width)
        ]
        if spec.last_fails:
            saga.step(
                "last", do_step, Script(run=spec.run, step="last", fail="too late"), after=fan
            )
        result = await saga.run()  # a SagaFailed fails the workflow with its own state
        return result.state.status.value


class BlockSpec(BaseModel):
    """The imperative saga of ``BlockSaga``: which of its steps fail, sleep, time out."""

    run: str
    fail: dict[str, str] = Field(default_factory=dict)  # step -> failure message
    sleep: dict[str, float] = Field(default_factory=dict)
    undo_sleep: dict[str, float] = Field(default_factory=dict)
    start_to_close: dict[str, float] = Field(default_factory=dict)
    fan_out: int = 2
    catch: bool = True  # when "hotel" fails, try "partner hotel"
    unawaited: bool = False  # start a "note" step that nobody awaits
    raise_at_end: bool = False  # the block's own code fails after every step
    timeout: float | None = None
    search_attributes: bool = False
    max_parallelism: int | None = None
    ship_failures: int = 0  # PivotBlockSaga: "ship" fails retryably this many times
    ship_compensated: bool = False  # PivotBlockSaga: "ship" declares a compensation


@workflow.defn
class BlockSaga:
    """The imperative form: a branch on a result, an alternative, a run-time fan-out."""

    @workflow.run
    async def run(self, spec: BlockSpec) -> str:
        def call(step: str, **more: Any) -> Step[str]:
            options: dict[str, Any] = {}
            if step in spec.start_to_close:
                options["start_to_close_timeout"] = timedelta(seconds=spec.start_to_close[step])
                options["retry_policy"] = RetryPolicy(maximum_attempts=1)
            return saga.step(
                step,
                do_step,
                Script(
                    run=spec.run,
                    step=step,
                    fail=spec.fail.get(step),
                    sleep=spec.sleep.get(step, 0.0),
                ),
                # Heartbeats carry a cancellation to the activity: within a second.
                heartbeat_timeout=timedelta(seconds=2),
                compensate=undo_step,
                compensate_arg=Script(run=spec.run, step=step, sleep=spec.undo_sleep.get(step, 0)),
                **options,
                **more,
            )

        async with Saga(
            "block",
            timeout=timedelta(seconds=spec.timeout) if spec.timeout else None,
            search_attributes=spec.search_attributes,
            max_parallelism=spec.max_parallelism,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=100), maximum_attempts=3
            ),
            compensation_options={
                "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=100))
            },
        ) as saga:
            flight = await call("flight")
            if flight == "do flight":  # branch on a result
                await call("insurance")
            try:
                await call("hotel")
            except StepFailed:  # try an alternative (forward recovery)
                if not spec.catch:
                    raise
                await call("partner hotel")
            if spec.unawaited:
                call("note")
            # fan out over data known only at run time
            await asyncio.gather(*(call(f"ticket {i}") for i in range(spec.fan_out)))
            await call("pay")
            if spec.raise_at_end:
                raise ValueError("the code after the steps failed")
        return "booked"


@workflow.defn
class PivotBlockSaga:
    """The imperative form with a pivot: reserve; pay (no way back); ship."""

    @workflow.run
    async def run(self, spec: BlockSpec) -> str:
        def script(step: str, **more: Any) -> Script:
            return Script(run=spec.run, step=step, fail=spec.fail.get(step), **more)

        fast = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3)
        async with Saga("pivot block", retry_policy=fast) as saga:
            await saga.step(
                "reserve",
                do_step,
                script("reserve"),
                compensate=undo_step,
                compensate_arg=Script(run=spec.run, step="reserve"),
            )
            await saga.step("pay", do_step, script("pay"), pivot=True)
            undo = {"compensate": undo_step} if spec.ship_compensated else {}
            await saga.step(
                "ship",
                do_step,
                script("ship", transient_failures=spec.ship_failures),
                **undo,  # type: ignore[arg-type]
            )
        return "shipped"


@workflow.defn
class HumanBlockSaga:
    """The imperative form, waiting for a human: a's undo is refused, b fails."""

    @workflow.run
    async def run(self, run: str) -> str:
        async with Saga("block human") as saga:
            await saga.step(
                "a",
                do_step,
                Script(run=run, step="a"),
                compensate=undo_step,
                compensate_arg=Script(run=run, step="a", fail="refund refused"),
            )
            await saga.step("b", do_step, Script(run=run, step="b", fail="no rooms"))
        return "booked"


class CrowdedSpec(BaseModel):
    run: str
    form: str = "graph"  # or "block": the imperative form
    fail: bool = False  # step b fails: the saga compensates


class _Crowd:
    """Other tasks of the workflow, each issuing a command (an activity) after its own
    number of loop turns: their commands land at every moment around the saga's, so a
    history recorded with them fixes the moment each of the saga's commands was issued."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.tasks: list[asyncio.Task[str]] = []

    def gather(self, label: str, size: int = 12) -> None:
        for turns in range(size):
            self.tasks.append(asyncio.create_task(self._neighbour(f"{label} {turns}", turns)))

    def note(self, label: str) -> Any:
        """A ``public_note=`` that gathers a crowd as the step succeeds."""
        return lambda result: self.gather(label) or ""

    async def _neighbour(self, name: str, turns: int) -> str:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await workflow.execute_activity(
            do_step, Script(run=self.run, step=name), start_to_close_timeout=timedelta(seconds=30)
        )


@workflow.defn
class CrowdedSaga:
    """A three-step saga among other tasks of the workflow that issue commands at each
    loop moment around its start, its steps' completions and its end."""

    @workflow.run
    async def run(self, spec: CrowdedSpec) -> list[str]:
        crowd = _Crowd(spec.run)
        timeout = {"start_to_close_timeout": timedelta(seconds=30)}

        def script(step: str) -> Script:
            fail = "full" if spec.fail and step == "b" else None
            return Script(run=spec.run, step=step, sleep=0.2 if fail else 0, fail=fail)

        crowd.gather("start")
        outcome = "succeeded"
        if spec.form == "graph":
            saga = Saga("crowded", **timeout)  # type: ignore[arg-type]
            saga.step("a", do_step, script("a"), compensate=undo_step, public_note=crowd.note("a"))
            saga.step(
                "b",
                do_step,
                script("b"),
                compensate=undo_step,
                after=["a"],
                public_note=crowd.note("b"),
            )
            saga.step("c", do_step, script("c"), compensate=undo_step, public_note=crowd.note("c"))
            try:
                await saga.run()
            except SagaFailed:
                outcome = "failed"
        else:
            try:
                async with Saga("crowded", **timeout) as block:  # type: ignore[arg-type]
                    await block.step(
                        "a", do_step, script("a"), compensate=undo_step, public_note=crowd.note("a")
                    )
                    b = block.step(
                        "b", do_step, script("b"), compensate=undo_step, public_note=crowd.note("b")
                    )
                    c = block.step(
                        "c", do_step, script("c"), compensate=undo_step, public_note=crowd.note("c")
                    )
                    await b
                    await c
            except SagaFailed:
                outcome = "failed"
        # The workflow's own command after the saga: its moment against the crowd's.
        after = await workflow.execute_activity(
            do_step,
            Script(run=spec.run, step="after"),
            start_to_close_timeout=timedelta(seconds=30),
        )
        return [outcome, after, *await asyncio.gather(*crowd.tasks)]


@workflow.defn
class CrowdedCancelsSaga:
    """One-step sagas among other tasks that issue commands, each saga's task cancelled
    by another task after 0 to 5 loop callbacks: as it starts, and as its step ends."""

    def __init__(self) -> None:
        self.cancellers: list[asyncio.Task[None]] = []

    def cancel_after(self, task: asyncio.Task[Any], turns: int) -> None:
        async def cancel() -> None:
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()

        self.cancellers.append(asyncio.create_task(cancel()))

    @workflow.run
    async def run(self, run: str) -> list[str]:
        crowd = _Crowd(run)
        outcomes = []
        for when in ("start", "end"):
            for turns in range(6):
                label = f"{when} {turns}"
                saga = Saga(label, start_to_close_timeout=timedelta(seconds=30))
                running: list[asyncio.Task[SagaResult]] = []

                def as_it_ends(
                    result: Any, label: str = label, turns: int = turns, running: Any = running
                ) -> str:
                    crowd.gather(label, size=30)
                    self.cancel_after(running[0], turns)
                    return ""

                saga.step(
                    "a",
                    do_step,
                    Script(run=run, step=label),
                    compensate=undo_step,
                    public_note=as_it_ends if when == "end" else None,
                )
                running.append(asyncio.create_task(saga.run()))
                if when == "start":
                    crowd.gather(label, size=30)  # past the next saga's first command
                    self.cancel_after(running[0], turns)
                try:
                    await running[0]
                    outcomes.append(f"{label}: succeeded")
                except asyncio.CancelledError:
                    outcomes.append(f"{label}: cancelled")
        after = await workflow.execute_activity(
            do_step, Script(run=run, step="after"), start_to_close_timeout=timedelta(seconds=30)
        )
        return [*outcomes, after, *await asyncio.gather(*crowd.tasks)]
