"""Waiting in the workflow's event loop at the very moments the engine always has, for less.

Every recorded history fixes the order of the commands a workflow issued, and a
workflow may have other tasks that issue commands beside a saga's: a saga that issued
its commands one loop callback earlier or later than the code that recorded the
history would no longer replay it. The SDK's event loop runs its callbacks first in,
first out, so the order is fixed by the moment each callback is queued. What is here
queues the callbacks that matter (a step of work, the waiting task's wake-up) at the
same moments as the code it replaces, named in each docstring, with fewer objects
and calls: a task of its own and a ``workflow.wait`` on it cost about 0.07 million
instructions (bench/README.md, "Sixth pass"). ``tests/test_replay.py`` replays the
``crowded_*`` histories, recorded with the replaced code, in which other tasks issue
commands (and cancel the saga) at each moment around the saga's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class _Shield:
    """The state of one :func:`as_if_shielded`."""

    __slots__ = ("error", "ran", "waiter", "work")

    def __init__(self, work: Callable[[], None], waiter: asyncio.Future[None]) -> None:
        self.work = work
        self.waiter = waiter
        self.ran = False
        self.error: BaseException | None = None

    def step(self) -> None:
        """Where the task's first step would run; it would end there too."""
        try:
            self.work()
        except BaseException as err:  # raised to the waiting task, as task.result() would
            self.error = err
        self.ran = True
        asyncio.get_running_loop().call_soon(self.done)  # the task's done callback

    def done(self) -> None:
        """Where ``workflow.wait``'s done callback would run: wake the waiting task."""
        if not self.waiter.done():
            self.waiter.set_result(None)


async def as_if_shielded(work: Callable[[], None]) -> bool:
    """Run ``work``, which never waits, as if in a task of its own that the caller
    awaits with ``workflow.wait([task])`` until it is done, retrying on cancellation.

    That is what ``Saga`` does with work that a cancel of the workflow must not cut
    short; when the work cannot wait, the task and the wait are only moments in the
    loop, kept here: ``work`` runs where the task's step would, and the caller resumes
    where ``workflow.wait`` would return. A cancel of the caller's task meanwhile is
    absorbed as it was: the task would be done, so the caller goes on at once.

    Returns:
        True if the caller's task was cancelled meanwhile (``work`` ran regardless).
    """
    loop = asyncio.get_running_loop()
    shield = _Shield(work, loop.create_future())
    loop.call_soon(shield.step)  # where create_task would queue the task's first step
    cancelled = False
    try:
        await shield.waiter
    except asyncio.CancelledError:
        # A cancel can only wake this task after ``shield.step``, queued before the
        # wake-up, has run: the task would be done, and ``workflow.wait`` would not be
        # called again (the recorded ``crowded_cancels`` history cancels at each moment).
        assert shield.ran
        cancelled = True
    if shield.error is not None:
        raise shield.error
    return cancelled
