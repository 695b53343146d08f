"""A step's identity (its activity id) and the helpers for code running inside a step.

A step's activity id is ``<saga run>/<step>``, its compensation's the same plus
``/compensate``. ``<saga run>`` is the saga's name for the first run of that name in
a workflow run, ``<name>#2``, ``<name>#3``… for the next ones (a workflow that retries
a saga in a loop), so every run gets its own ids and idempotency keys. Names are
escaped (``%`` ``/`` ``#`` as ``%25`` ``%2F`` ``%23``), so no step name can make two
ids collide, and names without those characters keep readable ids.
"""

from __future__ import annotations

from temporalio import activity

COMPENSATION_SUFFIX = "/compensate"

_ESCAPES = (("%", "%25"), ("/", "%2F"), ("#", "%23"))


def escape(name: str) -> str:
    """A name as it appears inside an id: without ``/`` or ``#`` of its own."""
    for raw, escaped in _ESCAPES:
        name = name.replace(raw, escaped)
    return name


def unescape(text: str) -> str:
    """The name that :func:`escape` turned into ``text``."""
    for raw, escaped in reversed(_ESCAPES):
        text = text.replace(escaped, raw)
    return text


def saga_run_id(saga: str, run: int) -> str:
    """The id of the ``run``-th run (from 1) of the saga called ``saga`` in a workflow."""
    return escape(saga) if run == 1 else f"{escape(saga)}#{run}"


def parse_saga_run_id(text: str) -> tuple[str, int]:
    """The saga's name and run number in a :func:`saga_run_id`."""
    name, _, run = text.partition("#")
    return unescape(name), int(run) if run.isdigit() else 1


def step_activity_id(saga_run: str, step: str) -> str:
    """The activity id of a step (its compensation's adds :data:`COMPENSATION_SUFFIX`)."""
    return f"{saga_run}/{escape(step)}"


def idempotency_key() -> str:
    """A key for the current saga step, for the service to deduplicate on.

    Inside a step's activity it is the same on every retry of that step, and inside
    the step's compensation it is the same as the step's, so a compensation can find
    what an uncertain step (one that timed out) did, and a service can refuse a
    booking that arrives after its cancellation. It is unique per workflow run, saga
    run and step: a saga that runs again in the same workflow (a retry loop) gets
    new keys.

    The key is ``<workflow id>/<run id>/<activity id>`` (a compensation's activity id
    without its ``/compensate`` suffix), so an activity written with another
    Temporal SDK can compute the same key from its activity info.

    Raises:
        RuntimeError: Not called from inside an activity.
    """
    info = activity.info()
    step = info.activity_id.removesuffix(COMPENSATION_SUFFIX)
    return f"{info.workflow_id}/{info.workflow_run_id}/{step}"
