"""The saga data converter decodes as pydantic's does, without rebuilding type adapters.

The SDK makes a payload converter per workflow run; pydantic's builds a ``TypeAdapter``
per type it decodes, per converter. Ours shares the adapters of types made of builtins
and ``typing`` alone, and leaves a user's classes (which the sandbox may import afresh
for each run) to the converter of the run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import pytest
from pydantic import BaseModel
from temporalio.contrib.pydantic import PydanticPayloadConverter

from temporal_saga.client import _converter
from temporal_saga.client._converter import SagaPayloadConverter, shared_type_adapter


class Booking(BaseModel):
    flight: str
    seats: int


@dataclasses.dataclass
class Hotel:
    name: str
    nights: int


PLAIN = [
    (dict[str, Any], {"steps": [{"name": "a"}], "chain": False}),
    (str, "booked"),
    (list[str], ["a", "b"]),
    (Optional[int], None),  # noqa: UP045 (the typing form is a hint users write too)
    (int | None, 3),
    (tuple[int, ...], (1, 2)),
    (Any, {"free": ["form"]}),
]
USERS = [(Booking, Booking(flight="FL-1", seats=2)), (Hotel, Hotel("Lido", 3))]


@pytest.mark.parametrize(("hint", "value"), PLAIN + USERS)
def test_it_decodes_every_hint_as_pydantics_converter_does(hint: Any, value: Any) -> None:
    ours, theirs = SagaPayloadConverter(), PydanticPayloadConverter()
    payloads = theirs.to_payloads([value])
    assert ours.to_payloads([value]) == payloads
    assert ours.from_payloads(payloads, [hint]) == theirs.from_payloads(payloads, [hint])
    assert ours.from_payloads(payloads, None) == theirs.from_payloads(payloads, None)


@pytest.mark.parametrize(("hint", "value"), PLAIN)
def test_a_plain_types_adapter_is_built_once_for_every_workflow_run(
    hint: Any, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    payloads = SagaPayloadConverter().to_payloads([value])
    SagaPayloadConverter().from_payloads(payloads, [hint])  # the first run builds it
    built: list[Any] = []
    monkeypatch.setattr(_converter, "TypeAdapter", lambda h: built.append(h))
    run = SagaPayloadConverter()  # as the SDK makes one for each workflow run
    run.from_payloads(payloads, [hint])
    json = run.converters[b"json/plain"]
    assert built == [] and json._type_adapter.cache_info().currsize == 0  # type: ignore[attr-defined]
    assert shared_type_adapter(hint) is shared_type_adapter(hint) is not None


@pytest.mark.parametrize(
    "hint", [Booking, Hotel, list[Booking], dict[str, Hotel], Booking | None, [str]]
)
def test_a_users_classes_are_never_shared_between_runs(hint: Any) -> None:
    """The sandbox may import a workflow's module afresh for each run: a process-wide
    adapter for its classes would keep every run's copy of the module alive."""
    assert shared_type_adapter(hint) is None
