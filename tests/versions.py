"""One saga in three versions (workflow type ``Versioned``), as a team would change it.

- ``V1``: reserve, then notify and charge side by side.
- ``V2``: the safe change. ``insure`` is added after reserve with ``since=``, and
  ``notify`` is retired with ``until=``.
- ``V2Unsafe``: the same addition without ``since=``: it breaks every saga in flight
  that had passed reserve.
- ``V3``: step 2 of the life cycle, both patches deprecated; ``V4``: step 3, the
  patches gone (insure always there, notify removed).
- ``V1Relabelled``: V1 with reserve showing other text (``label=``, a compensation
  name): display only, safe. ``V1Renamed``: reserve renamed: its identity, unsafe.

The activities record what they did in ``CALLS`` (per saga run). A step named in
``flaky`` fails its first attempt (retried 2 s later: time to swap the workers, as a
deploy does); one named in ``fail`` fails for good (after its flaky attempt, if both).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from temporal_saga import Saga, SagaResult, deprecated_patch

CALLS: defaultdict[str, list[str]] = defaultdict(list)
INSURE_PATCH = "versioned-insure"
RETIRE_NOTIFY_PATCH = "versioned-retire-notify"


class Call(BaseModel):
    run: str
    step: str
    flaky: bool = False
    fail: bool = False


class VersionedInput(BaseModel):
    run: str
    flaky: str | None = None
    fail: str | None = None

    def call(self, step: str) -> Call:
        return Call(run=self.run, step=step, flaky=self.flaky == step, fail=self.fail == step)


@activity.defn
async def act(call: Call) -> str:
    CALLS[call.run].append(call.step)
    if call.flaky and activity.info().attempt == 1:
        raise ApplicationError(f"{call.step}: first attempt fails")
    if call.fail:
        raise ApplicationError(f"{call.step} refused", non_retryable=True)
    return call.step


@activity.defn
async def undo(call: Call) -> None:
    CALLS[call.run].append(f"undo {call.step}")


ACTIVITIES = [act, undo]
RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=3)


def saga(inp: VersionedInput) -> Saga:
    return Saga("versioned", start_to_close_timeout=timedelta(seconds=10), retry_policy=RETRY)


def shape(
    inp: VersionedInput,
    *,
    reserve: str = "reserve",
    insure: bool = False,
    since: Any = None,
    notify: bool = True,
    until: Any = None,
    **shown: Any,
) -> Saga:
    """reserve (named ``reserve``, showing ``shown``); then insure (if ``insure``),
    notify (if ``notify``) and charge, side by side."""
    s = saga(inp)
    first = s.step(reserve, act, inp.call("reserve"), compensate=undo, **shown)
    if insure:
        s.step("insure", act, inp.call("insure"), compensate=undo, after=[first], since=since)
    if notify:
        s.step("notify", act, inp.call("notify"), compensate=undo, after=[first], until=until)
    s.step("charge", act, inp.call("charge"), compensate=undo, after=[first])
    return s


@workflow.defn(name="Versioned")
class V1:
    @workflow.run
    async def run(self, inp: VersionedInput) -> SagaResult:
        return await shape(inp).run()


@workflow.defn(name="Versioned")
class V2:
    @workflow.run
    async def run(self, inp: VersionedInput) -> SagaResult:
        return await shape(inp, insure=True, since=INSURE_PATCH, until=RETIRE_NOTIFY_PATCH).run()


@workflow.defn(name="Versioned")
class V2Unsafe:
    @workflow.run
    async def run(self, inp: VersionedInput) -> SagaResult:
        return await shape(inp, insure=True).run()


@workflow.defn(name="Versioned")
class V3:
    @workflow.run
    async def run(self, inp: VersionedInput) -> SagaResult:
        since, until = deprecated_patch(INSURE_PATCH), deprecated_patch(RETIRE_NOTIFY_PATCH)
        return await shape(inp, insure=True, since=since, until=until).run()


@workflow.defn(name="Versioned")
class V4:
    @workflow.run
    async def run(self, inp: VersionedInput) -> SagaResult:
        return await shape(inp, insure=True, notify=False).run()


@workflow.defn(name="Versioned")
class V1Relabelled:
    @workflow.run
    async def run(self, inp: VersionedInput) -> SagaResult:
        return await shape(
            inp, label="reserve the room", compensation_name="release the room"
        ).run()


@workflow.defn(name="Versioned")
class V1Renamed:
    @workflow.run
    async def run(self, inp: VersionedInput) -> SagaResult:
        return await shape(inp, reserve="reserve the room").run()


@workflow.defn
class RetiredInBlock:
    """The imperative form: notify retired (``until=``) between reserve and charge."""

    @workflow.run
    async def run(self, inp: VersionedInput) -> list[str | None]:
        async with saga(inp) as s:
            reserve = await s.step("reserve", act, inp.call("reserve"), compensate=undo)
            notify = await s.step(
                "notify", act, inp.call("notify"), compensate=undo, until=RETIRE_NOTIFY_PATCH
            )
            charge = await s.step("charge", act, inp.call("charge"), compensate=undo)
        return [reserve, notify, charge]
