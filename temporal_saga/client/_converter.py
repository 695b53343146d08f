"""What sagas hand to Temporal, and which of it may be stored in clear.

The data converter is the pydantic one with three additions:

* **Public text.** A saga's step and compensation names (the activities' summaries)
  and its trace (the workflow's current details) are the operators' view of a saga,
  so they stay readable in the Web UI even when payloads are encrypted. The engine
  marks them with ``PublicText``; the converter tags such payloads (and the
  workflow metadata query answer that carries the current details) with
  ``temporal-saga-public`` metadata, and tagged payloads bypass the codec, whichever
  it is. Everything else (inputs, results, ``saga_state``, failure details) goes
  through it. The engine writes only step names, statuses and error messages into
  public text: payload content gets there only if a step opts in with
  ``public_note=``.
* **Type adapters shared between workflow runs.** The SDK makes a payload converter
  per workflow run, and the pydantic one builds a ``TypeAdapter`` for each type it
  decodes, per converter: 0.1 ms for a ``dict[str, Any]``, every run. Types made of
  builtins and ``typing`` alone get one adapter for the whole process; a user's own
  classes keep theirs per converter, since the workflow sandbox may import their
  module afresh for each run (sharing would keep every run's copy alive).
* **Validation errors without the input.** A pydantic ``ValidationError``'s message
  quotes the offending input (a mistyped passport number, say); failures store the
  field, the rule and the error type instead, so the message is safe to store in
  clear.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter, PydanticPayloadConverter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverter,
    PayloadCodec,
    PayloadConverter,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.exceptions import ApplicationError

from .._protocol import PUBLIC, is_public, is_public_value
from .._sdk import install_hint


def _is_public(value: Any) -> bool:
    return is_public_value(value) or isinstance(value, WorkflowMetadata)


# Types whose adapter every workflow run can share: the same objects in every run.
_PLAIN_TYPES = frozenset({Any, str, int, float, bool, bytes, type(None), Ellipsis})
_PLAIN_GENERICS = frozenset({list, dict, tuple, set, frozenset, Union, types.UnionType})
_SHARED: dict[Any, TypeAdapter[Any]] = {}


def _plain(hint: Any) -> bool:
    """Whether ``hint`` is made of builtins and ``typing`` alone (no user class)."""
    if hint in _PLAIN_TYPES or hint in _PLAIN_GENERICS:
        return True
    return get_origin(hint) in _PLAIN_GENERICS and all(_plain(arg) for arg in get_args(hint))


def shared_type_adapter(hint: Any) -> TypeAdapter[Any] | None:
    """The process-wide adapter for a plain ``hint``; None for any other."""
    try:
        adapter = _SHARED.get(hint)
        if adapter is None and _plain(hint):
            adapter = _SHARED[hint] = TypeAdapter(hint)  # two threads may both: same
    except TypeError:  # an unhashable hint
        return None
    return adapter


class _SharedTypeAdapters(PydanticJSONPlainPayloadConverter):
    """Pydantic's JSON converter, with plain types' adapters shared (see module docs)."""

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        adapter = shared_type_adapter(Any if type_hint is None else type_hint)
        if adapter is None:
            return super().from_payload(payload, type_hint)
        return adapter.validate_json(payload.data)


class SagaPayloadConverter(PydanticPayloadConverter):
    """The pydantic payload converter, tagging public text and sharing the type adapters
    of plain types between workflow runs (see the module docs)."""

    def __init__(self) -> None:
        super().__init__()
        self.converters = {
            encoding: _SharedTypeAdapters()
            if type(converter) is PydanticJSONPlainPayloadConverter
            else converter
            for encoding, converter in self.converters.items()
        }

    def to_payloads(self, values: Sequence[Any]) -> list[Payload]:
        """Convert like pydantic; tag the payloads of public values."""
        payloads = super().to_payloads(values)
        for value, payload in zip(values, payloads, strict=True):
            if _is_public(value):
                payload.metadata[PUBLIC] = b"1"
        return payloads


class KeepPublicText(PayloadCodec, WithSerializationContext):
    """A codec that leaves public text as it is and hands every other payload to
    ``inner`` (any codec: encryption, compression, a KMS client)."""

    def __init__(self, inner: PayloadCodec) -> None:
        self.inner = inner

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encode with ``inner``, all but the public text."""
        return await self._apply(self.inner.encode, payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decode with ``inner``, all but the public text (stored as it was)."""
        return await self._apply(self.inner.decode, payloads)

    async def _apply(
        self,
        codec: Callable[[Sequence[Payload]], Awaitable[list[Payload]]],
        payloads: Sequence[Payload],
    ) -> list[Payload]:
        todo = [i for i, payload in enumerate(payloads) if not is_public(payload)]
        done = await codec([payloads[i] for i in todo]) if todo else []
        result = list(payloads)
        for i, payload in zip(todo, done, strict=True):
            result[i] = payload
        return result

    def with_context(self, context: SerializationContext) -> KeepPublicText:
        """The same, around ``inner`` given the context (if it takes one)."""
        if isinstance(self.inner, WithSerializationContext):
            return KeepPublicText(self.inner.with_context(context))
        return self


def _without_input(error: BaseException) -> str | None:
    """A pydantic ValidationError's message without the input it quotes; else None."""
    errors = getattr(error, "errors", None)
    if type(error).__name__ != "ValidationError" or not callable(errors):
        return None
    found = errors(include_url=False, include_input=False, include_context=False)
    lines = [f"{'.'.join(map(str, e['loc'])) or '(input)'}: {e['msg']}" for e in found]
    noun = "error" if len(lines) == 1 else "errors"
    title = getattr(error, "title", "input")
    return f"{len(lines)} validation {noun} for {title}\n" + "\n".join(lines)


class SagaFailureConverter(DefaultFailureConverter):
    """The default failure converter; validation errors lose the input they quote."""

    def to_failure(
        self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure
    ) -> None:
        """Convert like the SDK, with validation messages stripped of input values."""
        message = _without_input(exception)
        if message is not None:
            safe = ApplicationError(message, type=type(exception).__name__)
            safe.__traceback__ = exception.__traceback__
            safe.__cause__ = exception.__cause__
            exception = safe
        super().to_failure(exception, payload_converter, failure)


def data_converter(*, codec: PayloadCodec | None = None, from_env: bool = True) -> DataConverter:
    """The data converter sagas use: pydantic, public text tagged, validation messages
    without input values, and payloads encrypted when a codec is given or configured.

    Args:
        codec: Encode payloads with this codec (step names and the trace, public
            text, bypass it).
        from_env: Without ``codec``, use ``EncryptionCodec.from_env()``: the keys in
            ``TEMPORAL_SAGA_KEYS`` or ``TEMPORAL_SAGA_KEY_FILE``, if any. False: no
            encryption (what a reader without the keys sees).

    Raises:
        ValueError: ``TEMPORAL_SAGA_KEYS`` or ``TEMPORAL_SAGA_KEY_FILE`` is malformed.
    """
    if codec is None and from_env:
        codec = _codec_from_env()
    return dataclasses.replace(
        DataConverter.default,
        payload_converter_class=SagaPayloadConverter,
        failure_converter_class=SagaFailureConverter,
        payload_codec=KeepPublicText(codec) if codec is not None else None,
    )


KEY_VARIABLES = ("TEMPORAL_SAGA_KEYS", "TEMPORAL_SAGA_KEY_FILE")


def _codec_from_env() -> PayloadCodec | None:
    """The encryption codec the environment configures, if it configures one.

    Encryption is an optional extra: it is imported only when keys are configured, so
    a saga without encryption never loads ``cryptography``.
    """
    if not any(os.environ.get(name) for name in KEY_VARIABLES):
        return None
    try:
        from ..encryption import EncryptionCodec
    except ImportError as err:
        raise ValueError(
            f"{' or '.join(KEY_VARIABLES)} is set, but encryption is not installed: "
            f"{install_hint('encryption')} ({err})"
        ) from None
    return EncryptionCodec.from_env()
