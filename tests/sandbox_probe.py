"""A workflow that reports which modules the sandbox loaded for a saga workflow.

In a module of its own: the sandbox re-imports a workflow's module, so this one
imports what a saga workflow's module imports (``temporal_saga``) and nothing else.
"""

from __future__ import annotations

import sys

from temporalio import workflow

import temporal_saga
from temporal_saga import _sdk

# Modules a workflow must never load: the client side, encryption, I/O.
HEAVY = ("temporal_saga.client", "temporal_saga.encryption", "cryptography", "aiohttp")


@workflow.defn(sandboxed=True)
class ModulesInTheSandbox:
    """Returns the sandbox's loaded modules among ours and the heavy ones, and the id
    of the ``Saga`` class it sees (the worker's own, if ``temporal_saga`` is passed
    through; a fresh copy, if the sandbox re-imported it)."""

    @workflow.run
    async def run(self) -> tuple[list[str], int]:
        loaded = sorted(m for m in sys.modules if m.startswith(("temporal_saga", *HEAVY)))
        return loaded, id(temporal_saga.Saga)


@workflow.defn(sandboxed=True)
class HandlerTablesInTheSandbox:
    """Whether a saga here registers its query and Updates the fast way, straight
    into the workflow's handler tables (see ``temporal_saga._sdk``)."""

    @workflow.run
    async def run(self) -> bool:
        return _sdk.handler_tables() is not None
