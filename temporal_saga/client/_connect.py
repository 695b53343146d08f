"""Connecting to Temporal the way the ``temporal`` CLI does."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from temporalio.client import Client, Interceptor, Plugin
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from ._converter import data_converter
from ._plugin import SagaPlugin

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_UI_URL = "http://localhost:8233"


def web_ui_url(namespace: str, workflow_id: str, run_id: str | None = None) -> str:
    """The workflow's page in the Temporal Web UI.

    The UI's address comes from ``TEMPORAL_UI_URL`` (default ``http://localhost:8233``,
    the dev server's; for Temporal Cloud, ``https://cloud.temporal.io``).
    """
    # Child sagas' ids hold "/": the UI expects the id as one path segment.
    url = f"{_workflows_page(namespace)}/{quote(workflow_id, safe='')}"
    return f"{url}/{run_id}" if run_id else url


def web_ui_list_url(namespace: str, query: str) -> str:
    """The Web UI's list of the workflows a visibility ``query`` finds (a link to keep:
    the list as it is whenever it is opened)."""
    return f"{_workflows_page(namespace)}?query={quote(query, safe='')}"


def _workflows_page(namespace: str) -> str:
    base = os.environ.get("TEMPORAL_UI_URL", DEFAULT_UI_URL).rstrip("/")
    return f"{base}/namespaces/{quote(namespace, safe='')}/workflows"


async def connect(
    *,
    profile: str | None = None,
    namespace: str | None = None,
    connect_timeout: timedelta | None = None,
    runtime: Runtime | None = None,
    plugins: Sequence[Plugin] = (),
    interceptors: Sequence[Interceptor] = (),
) -> Client:
    """Connect with the SDK's environment configuration, the saga data converter and
    :class:`SagaPlugin` (which workers made from this client inherit).

    ``TEMPORAL_ADDRESS`` (default ``localhost:7233``), ``TEMPORAL_NAMESPACE``,
    ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS*`` and ``TEMPORAL_PROFILE`` are honoured, as
    are profiles in the Temporal config file (``TEMPORAL_CONFIG_FILE``), exactly as
    the ``temporal`` CLI reads them. With ``TEMPORAL_SAGA_KEYS`` or
    ``TEMPORAL_SAGA_KEY_FILE`` set, payloads are encrypted (see ``EncryptionCodec``).

    Args:
        profile: Profile of the config file to use (default: ``TEMPORAL_PROFILE``,
            else ``default``).
        namespace: The namespace, instead of the configuration's (another team's
            worker, say, behind a Nexus endpoint).
        connect_timeout: Give up connecting after this long.
        runtime: The SDK runtime (e.g. with Prometheus metrics or OpenTelemetry).
        plugins: More SDK plugins, after ``SagaPlugin`` (tracing, say).
        interceptors: SDK client interceptors (workers made from the client get
            those that are worker interceptors too).
    """
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config(profile=profile))
    config.setdefault("target_host", DEFAULT_ADDRESS)
    if namespace is not None:
        config["namespace"] = namespace
    return await Client.connect(
        **config,
        data_converter=data_converter(),
        plugins=[SagaPlugin(), *plugins],
        interceptors=interceptors,
        runtime=runtime,
        connect_timeout=connect_timeout,
    )
