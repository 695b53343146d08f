"""The client side of temporal-saga: everything that runs outside workflows.

* :func:`connect`, :class:`SagaPlugin` and :func:`data_converter`: a client (and its
  workers) that speaks the sagas' data: pydantic, public text in clear, payloads
  encrypted when keys are configured (``TEMPORAL_SAGA_KEYS``, which needs the
  ``encryption`` extra).
* :func:`load_state`, :func:`watch`, :func:`follow_trace`: a saga's state and trace,
  from the ``saga_state`` query or, with no worker answering, its history
  (:func:`state_from_history`).
* :func:`render_trace`: the trace as text; :func:`web_ui_url`: a saga's page in the Web UI.
* :func:`retry_step`, :func:`resolve_step`, :func:`give_up`: act on a saga that waits
  for a human (``NEEDS_HUMAN``); :func:`send_event`: bring an event to a saga's
  event step; a refusal raises :class:`ActionRejected`.
* :func:`start_until_step`: start a saga and return once a named step succeeded (an
  early answer for the caller), while the rest runs.
* The ``temporal-saga`` command (also ``python -m temporal_saga``).
"""

from .._errors import ActionRejected, NotASaga
from .._trace import render_trace
from ._connect import connect, web_ui_url
from ._converter import data_converter
from ._history import state_from_history
from ._operate import give_up, resolve_step, retry_step, send_event
from ._plugin import SagaPlugin
from ._start import start_until_step
from ._watch import follow_trace, load_state, watch

__all__ = [
    "ActionRejected",
    "NotASaga",
    "SagaPlugin",
    "connect",
    "data_converter",
    "follow_trace",
    "give_up",
    "load_state",
    "render_trace",
    "resolve_step",
    "retry_step",
    "send_event",
    "start_until_step",
    "state_from_history",
    "watch",
    "web_ui_url",
]
