"""Registering a saga's query and Update handlers without the SDK's per-call work.

``workflow.set_query_handler`` and ``workflow.set_update_handler`` work out the
handler's signature and type hints at each call, and every saga registers its
handlers when it starts. Counted (``bench/instructions.py``), that was 0.5 million
instructions per saga, 30 % of all the engine added to a hand-written saga. So the
definitions are built with their types given (the
operator Updates once, at import) and placed in the workflow's handler tables, as the
SDK's own registration does. That reaches into the SDK's internals: where they are not
as expected (another SDK version), the public functions are used instead, and a test
pins that the SDK this project installs takes the fast path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import workflow


def update_definition(
    name: str, handler: Callable[..., Any], validator: Callable[..., None], arg: type, ret: type
) -> workflow._UpdateDefinition:
    """An Update's definition, its argument and result types given (one argument)."""
    return workflow._UpdateDefinition(
        name=name, fn=handler, is_method=False, arg_types=[arg], ret_type=ret, validator=validator
    )


def _tables() -> tuple[dict[str | None, Any], dict[str | None, Any]] | None:
    """The running workflow's query and Update tables, if the SDK keeps them as expected."""
    instance = workflow._Runtime.current()
    queries, updates = getattr(instance, "_queries", None), getattr(instance, "_updates", None)
    if isinstance(queries, dict) and isinstance(updates, dict):
        return queries, updates
    return None


def set_update_handlers(definitions: tuple[workflow._UpdateDefinition, ...]) -> None:
    """Register the Updates, as ``workflow.set_update_handler`` would."""
    tables = _tables()
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
    tables = _tables()
    if tables is None:
        workflow.set_query_handler(name, handler)
        return
    tables[0][name] = workflow._QueryDefinition(
        name=name, fn=handler, is_method=False, arg_types=[], ret_type=ret
    )
