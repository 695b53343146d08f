"""Fake activities: stand-ins for a saga's real activities, with failures injected.

A fake is registered under the real activity's name, and decodes its argument as the
real one declares it, so the saga's own workflow runs unchanged against it. Each
attempt is recorded in :attr:`FakeActivity.calls`.

Time: a fake that times out, hangs or waits does so in real time, on any server: the
time-skipping test server runs its clock at the wall clock's pace while an activity
runs, and skips only when none does (between retries, while a saga waits on a timer).
So the server times a fake out for real, after the activity's own timeout: keep the
timeouts of steps you make time out short (seconds), and let the long waits be
timers, which skip.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from .._protocol import idempotency_key, parse_step_id
from .._sdk import activity_definition

#: The ``type`` of the ``ApplicationError`` an injected failure raises.
INJECTED_FAILURE = "InjectedFailure"

# How often a fake that hangs or waits heartbeats: a cancellation reaches it within
# about this long.
_HEARTBEAT_EVERY = 0.1


async def _heartbeat_for(seconds: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        activity.heartbeat()
        await asyncio.sleep(min(_HEARTBEAT_EVERY, left))


@dataclass(frozen=True)
class FakeCall:
    """One attempt of a fake activity.

    Attributes:
        step: The saga step the call belongs to (the activity id's step part).
        compensation: The call is the step's compensation.
        attempt: The attempt, from 1.
        arg: The argument, decoded as the real activity declares it (``None`` for
            an activity without one).
        outcome: ``"succeeded"``, ``"failed"``, ``"timed out"`` (recorded as the
            attempt starts outlasting its timeout) or ``"cancelled"``.
        workflow_id: The saga's workflow.
        idempotency_key: :func:`temporal_saga.idempotency_key` as the attempt saw it.
        started: When the attempt started (``time.monotonic()``, in the worker).
        ended: When it ended (for ``"timed out"``: as it started), to compare calls'
            order (e.g. that compensations ran in reverse).
    """

    step: str
    compensation: bool
    attempt: int
    arg: Any
    outcome: str
    workflow_id: str
    idempotency_key: str
    started: float
    ended: float


class FakeActivity:
    """An activity that stands in for a real one; made by :func:`fake`.

    Pass it to a worker like any activity (``SagaEnvironment.worker`` lets it
    replace the real activity of the same name).

    Attributes:
        name: The activity name it is registered under.
        calls: Every attempt so far, in the order they ended.
    """

    def __init__(
        self,
        name: str,
        arg_types: list[type] | None,
        ret_type: type | None,
        behaviour: _Behaviour,
        per_call: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self.calls: list[FakeCall] = []
        self._behaviour = behaviour
        self._per_call = per_call

        async def run(*args: Any) -> Any:
            return await self._attempt(args[0] if args else None)

        # The argument and result are converted as the real activity declares them.
        hints = list(arg_types or [])
        params = [
            inspect.Parameter(f"arg{i}", inspect.Parameter.POSITIONAL_ONLY, annotation=hint)
            for i, hint in enumerate(hints)
        ]
        run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            params, return_annotation=ret_type or inspect.Signature.empty
        )
        run.__annotations__ = {p.name: p.annotation for p in params}
        if ret_type is not None:
            run.__annotations__["return"] = ret_type
        run.__name__ = run.__qualname__ = name
        defined = activity.defn(name=name)(run)
        # The worker finds the definition on the object it is given: this one.
        definition = getattr(defined, "__temporal_activity_definition")
        setattr(self, "__temporal_activity_definition", definition)
        self._run = defined

    async def __call__(self, *args: Any) -> Any:
        """Run one attempt, as the worker does."""
        return await self._run(*args)

    @property
    def steps(self) -> list[str]:
        """The steps this fake ran for, in the order their first attempt ended."""
        return list(dict.fromkeys(c.step for c in self.calls if not c.compensation))

    def __repr__(self) -> str:
        return f"FakeActivity({self.name!r}, {len(self.calls)} calls)"

    async def _attempt(self, arg: Any) -> Any:
        info = activity.info()
        started = time.monotonic()

        def record(outcome: str) -> None:
            step, compensation = _step_of(info.activity_id)
            ended = started if outcome == "timed out" else time.monotonic()
            self.calls.append(
                FakeCall(
                    step,
                    compensation,
                    info.attempt,
                    arg,
                    outcome,
                    info.workflow_id or "",
                    idempotency_key(),
                    started,
                    ended,
                )
            )

        try:
            behaviour = self._behaviour_for(arg)
        except ApplicationError:
            record("failed")
            raise
        if behaviour.times_out_on(info.attempt):
            record("timed out")  # now: the saga sees the timeout before this wait ends
            await _outlast_timeout(info)
            return None  # too late: the server has timed the attempt out
        outcome = "failed"
        try:
            result = await behaviour.act(arg, info)
            outcome = "succeeded"
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            record(outcome)

    def _behaviour_for(self, arg: Any) -> _Behaviour:
        """This call's behaviour: the fake's own, or what ``per_call`` makes of ``arg``."""
        if self._per_call is None:
            return self._behaviour
        try:
            chosen = dict(self._per_call(arg))
            base = self._behaviour
            if _ENDINGS & chosen.keys():  # this call's ending replaces the fake's own
                base = replace(base, returns=_UNSET, fails=None, times_out=False, hangs=False)
            return replace(base, **chosen).checked(self.name)
        except (TypeError, ValueError) as err:  # a test's mistake: fail the call for good
            raise ApplicationError(
                f"{err} (from per_call)", type="FakeMisuse", non_retryable=True
            ) from None


# The options that decide how an attempt ends (or what it returns).
_ENDINGS = frozenset({"returns", "fails", "times_out", "hangs"})


class _Unset:
    """``returns=`` not given: the fake returns None."""

    def __repr__(self) -> str:
        return "None"


_UNSET: Any = _Unset()


@dataclass(frozen=True)
class _Behaviour:
    """What a fake does on an attempt: :func:`fake`'s options."""

    returns: Any = _UNSET  # unset: the attempt returns None
    fails: str | None = None
    fail_times: int = 0
    times_out: bool | int = False
    hangs: bool = False
    delay: timedelta | None = None

    def checked(self, name: str) -> _Behaviour:
        """This behaviour, its options checked.

        Raises:
            TypeError, ValueError: as :func:`fake` documents.
        """
        if self.fails is not None and not isinstance(self.fails, str):
            raise TypeError(f"fake({name!r}): fails= takes the failure's message, a str")
        if (
            isinstance(self.fail_times, bool)
            or not isinstance(self.fail_times, int)
            or self.fail_times < 0
        ):
            raise ValueError(
                f"fake({name!r}): fail_times= must be a count >= 0, not {self.fail_times!r}"
            )
        if not isinstance(self.times_out, int) or self.times_out < 0:
            raise ValueError(f"fake({name!r}): times_out= is True, False or a count >= 0")
        if self.delay is not None and (
            not isinstance(self.delay, timedelta) or self.delay < timedelta(0)
        ):
            raise TypeError(f"fake({name!r}): delay= must be a timedelta >= 0, not {self.delay!r}")
        endings = [
            option
            for option, given in (("fails", self.fails is not None), ("hangs", self.hangs))
            if given
        ]
        if self.times_out is True:
            endings.append("times_out=True")
        if len(endings) > 1:
            raise ValueError(
                f"fake({name!r}): {' and '.join(endings)} each decide how every attempt "
                "ends; give one"
            )
        if endings and self.returns is not _UNSET:
            raise ValueError(
                f"fake({name!r}): returns= would never be returned: {endings[0]} ends every attempt"
            )
        return self

    def times_out_on(self, attempt: int) -> bool:
        if isinstance(self.times_out, bool):
            return self.times_out
        return attempt <= self.times_out

    async def act(self, arg: Any, info: activity.Info) -> Any:
        if self.delay:
            await _heartbeat_for(self.delay.total_seconds())
        if self.hangs:
            while True:  # until the cancellation arrives, through a heartbeat
                await _heartbeat_for(_HEARTBEAT_EVERY)
        if self.fails is not None:
            raise ApplicationError(self.fails, type=INJECTED_FAILURE, non_retryable=True)
        if info.attempt <= self.fail_times:
            raise ApplicationError(
                f"injected failure, attempt {info.attempt} of {self.fail_times}",
                type=INJECTED_FAILURE,
            )
        if callable(self.returns):
            result = self.returns(arg)
            return await result if inspect.isawaitable(result) else result
        return None if self.returns is _UNSET else self.returns


def fake(
    activity_or_name: Callable[..., Any] | str,
    *,
    returns: Any = _UNSET,
    fails: str | None = None,
    fail_times: int = 0,
    times_out: bool | int = False,
    hangs: bool = False,
    delay: timedelta | None = None,
    per_call: Callable[[Any], Mapping[str, Any]] | None = None,
) -> FakeActivity:
    """A fake of an activity, with failures injected.

    Args:
        activity_or_name: The real activity (its name and argument type are taken
            from it), or just an activity name (the argument then arrives as the
            converter decodes it untyped, e.g. a ``dict``).
        returns: The result: a value, or a callable given the argument (sync or
            async; the real activity itself works, to fail first and then do the
            real thing).
        fails: Fail every attempt for good (a non-retryable ``ApplicationError`` of
            type ``InjectedFailure``) with this message.
        fail_times: Fail this many attempts first, retryably; then succeed.
        times_out: Time out: ``True`` on every attempt, a number for that many first
            attempts. The fake stops heartbeating and outlasts the nearest of the
            attempt's heartbeat, start-to-close and schedule-to-close timeouts, so the
            server times it out for real (taking that long, in real time).
        hangs: Heartbeat until cancelled (the saga's deadline, a failure elsewhere
            in the saga, a cancelled workflow).
        delay: Take this long (real time, heartbeating) before doing the rest.
        per_call: Decide each call from its argument: a function given the decoded
            argument that returns some of the options above by name (e.g.
            ``{"fails": "no rooms"}`` for one hotel, ``{}`` for the others); they
            replace the fake's own for that call (an ending, ``returns``, ``fails``,
            ``times_out`` or ``hangs``, replaces all four), and are checked as these
            are (a mistake fails that call for good, type ``FakeMisuse``).

    Raises:
        TypeError: ``activity_or_name`` is neither an activity nor a name, or an
            option has the wrong type.
        ValueError: Options that contradict each other, or a negative count.
    """
    name, arg_types, ret_type = _signature(activity_or_name)
    if per_call is not None and not callable(per_call):
        raise TypeError(f"fake({name!r}): per_call= takes a function of the argument")
    behaviour = _Behaviour(returns, fails, fail_times, times_out, hangs, delay).checked(name)
    return FakeActivity(name, arg_types, ret_type, behaviour, per_call)


def _signature(target: Callable[..., Any] | str) -> tuple[str, list[type] | None, type | None]:
    if isinstance(target, str):
        if not target:
            raise ValueError("fake(): the activity name is empty")
        return target, None, None
    definition = activity_definition(target)
    if definition is None or definition.name is None:
        raise TypeError(
            f"fake() takes an activity (a function decorated with @activity.defn) or "
            f"an activity name, not {target!r}"
        )
    arg_types = definition.arg_types
    if arg_types is None:  # the SDK could not read them: read the hints ourselves
        hints = typing.get_type_hints(target)
        arg_types = [hints[p] for p in inspect.signature(target).parameters if p in hints]
    return definition.name, arg_types, definition.ret_type


def _step_of(activity_id: str) -> tuple[str, bool]:
    ident = parse_step_id(activity_id)
    if ident is None:  # not a saga step: an activity the workflow ran itself
        return activity_id, False
    return ident.step, ident.compensation


async def _outlast_timeout(info: activity.Info) -> None:
    """Wait, without heartbeating, until just past the attempt's nearest timeout."""
    # Measured from the attempt's start (it has just started), in the server's own
    # times: the time-skipping server's clock may be hours ahead of the wall clock.
    left = [t for t in (info.heartbeat_timeout, info.start_to_close_timeout) if t]
    if info.schedule_to_close_timeout and info.scheduled_time and info.started_time:
        left.append(info.scheduled_time + info.schedule_to_close_timeout - info.started_time)
    wait = max(min(left, default=timedelta(0)), timedelta(0))
    await asyncio.sleep(wait.total_seconds() + 1)
