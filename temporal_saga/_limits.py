"""Temporal's limits that a saga must respect, and the engine's defaults derived from them.

Every figure here is either a default of the Temporal server (its dynamic config key
in brackets) or measured on the Python SDK; see the docs on large sagas.
"""

from __future__ import annotations

#: Steps (and compensations) in flight at once unless ``max_parallelism`` says otherwise.
#: Each wave of starts happens in one workflow activation, which the Python SDK must
#: finish within 2 s (its deadlock detector); scheduling one activity with its summary
#: costs about 2 ms of that on a small machine, so 500 starts leave room.
DEFAULT_MAX_PARALLELISM = 500
#: Past this many history events, at most LARGE_HISTORY_PARALLELISM steps are in flight
#: (see Limiter.parallelism in _scheduler).
LARGE_HISTORY_EVENTS = 2000
LARGE_HISTORY_PARALLELISM = 40
#: Pending activities per workflow [limit.numPendingActivities.error]; more would fail
#: the workflow task forever.
PENDING_ACTIVITY_LIMIT = 2000
#: History limits [limit.historyCount.error, limit.historySize.error].
HISTORY_EVENT_LIMIT = 51_200
HISTORY_BYTES_LIMIT = 50 * 1024 * 1024
#: History events per activity: 3 of its own (scheduled, started, closed), and up to 3
#: more when its completion has a workflow task to itself.
EVENTS_PER_STEP_FLOOR = 3
EVENTS_PER_STEP_WORST_CASE = 6
#: A ``SagaFailed`` carries every step's state up to this many steps (see
#: _state.bounded).
FULL_STATE_STEPS = 100
