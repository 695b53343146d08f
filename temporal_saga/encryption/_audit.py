"""What a saga's history holds in clear: the evidence an auditor asks for.

``python -m temporal_saga audit WORKFLOW_ID`` reads the history as Temporal stores it
(no decoding) and sorts every payload in it: encrypted (and with which key), public
text (step names and the trace, tagged by the saga data converter), search
attribute values, empty, or in clear. It also lists the failure messages, which
Temporal stores as text. It exits 1 if any payload with content is in clear.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent

from .._protocol import is_public
from ._codec import ENCODING, KEY_ID

Kind = Literal["encrypted", "public", "search attribute", "sdk", "empty", "clear"]

# Marker details that the SDK itself writes, never from the converter: a patch's id, a
# local activity's type, id, attempt and times (its result goes in "result").
_SDK_MARKER_FIELDS = ("details[patch-data]", "details[data]")


@dataclass(frozen=True)
class StoredPayload:
    """One payload of a history, as stored.

    Attributes:
        event_id: The event that holds it.
        field: Where in the event (``activity_task_scheduled_event_attributes.input``).
        kind: ``encrypted``, ``public`` (tagged public text), ``search attribute``
            (indexed by the server, so never encrypted), ``sdk`` (the SDK's own
            bookkeeping in markers: patch ids, a local activity's type and times),
            ``empty`` (no content, e.g. ``None``) or ``clear`` (content anyone with
            the database can read).
        key_id: The encryption key's id, for an encrypted payload.
        text: The public text, for a public payload.
    """

    event_id: int
    field: str
    kind: Kind
    key_id: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class HistoryAudit:
    """A history's payloads and failure messages, as stored.

    Attributes:
        events: How many events the history has.
        payloads: Every payload, in event order.
        failure_messages: The failure messages (stored as text, never encrypted).
    """

    events: int
    payloads: tuple[StoredPayload, ...]
    failure_messages: tuple[str, ...]

    @property
    def in_clear(self) -> list[StoredPayload]:
        """The payloads whose content anyone who can read the database can read."""
        return [p for p in self.payloads if p.kind == "clear"]

    def report(self) -> str:
        """The audit as text: counts, key ids, the public texts and failure messages."""
        kinds = Counter(p.kind for p in self.payloads)
        keys = Counter(p.key_id for p in self.payloads if p.key_id)
        lines = [f"{self.events} events, {len(self.payloads)} payloads"]
        for kind in ("encrypted", "public", "search attribute", "sdk", "empty", "clear"):
            if kind == "encrypted" and keys:
                detail = ", ".join(f"key {k}: {n}" for k, n in sorted(keys.items()))
                lines.append(f"  encrypted: {kinds[kind]} ({detail})")
            else:
                lines.append(f"  {kind}: {kinds[kind]}")
        public = sorted({p.text for p in self.payloads if p.text is not None})
        if public:
            lines.append("public text: " + ", ".join(repr(t) for t in public))
        for payload in self.in_clear:
            lines.append(f"IN CLEAR: event {payload.event_id}, {payload.field}")
        if self.failure_messages:
            messages = sorted(set(self.failure_messages))
            lines.append("failure messages: " + ", ".join(repr(m) for m in messages))
        return "\n".join(lines)


def _walk(message: Message, path: str) -> Iterator[tuple[str, Message]]:
    """Every sub-message of ``message`` with its field path (map values included)."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        name = f"{path}.{field.name}" if path else field.name
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is None:
                continue  # a map of scalars, such as a payload's metadata
            children = [(f"{name}[{key}]", item) for key, item in value.items()]
        elif field.is_repeated:
            children = [(f"{name}[{index}]", item) for index, item in enumerate(value)]
        else:
            children = [(name, value)]
        for child_path, child in children:
            yield child_path, child
            yield from _walk(child, child_path)


def _classify(event_id: int, field: str, payload: Payload) -> StoredPayload:
    encoding = payload.metadata.get("encoding", b"")
    if encoding == ENCODING:
        key_id = payload.metadata.get(KEY_ID, b"").decode()
        return StoredPayload(event_id, field, "encrypted", key_id=key_id)
    if is_public(payload):
        try:
            text = json.loads(payload.data)
        except ValueError:
            text = None
        return StoredPayload(
            event_id, field, "public", text=text if isinstance(text, str) else None
        )
    if "search_attributes" in field:
        return StoredPayload(event_id, field, "search attribute")
    marker, _, detail = field.partition("marker_recorded_event_attributes.")
    if not marker and detail.startswith(_SDK_MARKER_FIELDS):
        return StoredPayload(event_id, field, "sdk")
    if encoding == b"binary/null" or not payload.data:
        return StoredPayload(event_id, field, "empty")
    return StoredPayload(event_id, field, "clear")


def audit_history(events: Sequence[HistoryEvent]) -> HistoryAudit:
    """Sort every payload of a history as stored (fetch it with no decoding:
    ``WorkflowHandle.fetch_history`` returns the events as the server keeps them)."""
    payloads: list[StoredPayload] = []
    messages: list[str] = []
    for event in events:
        for field, message in _walk(event, ""):
            if isinstance(message, Payload):
                payloads.append(_classify(event.event_id, field, message))
            elif isinstance(message, Failure) and message.message:
                messages.append(message.message)
    return HistoryAudit(len(events), tuple(payloads), tuple(messages))
