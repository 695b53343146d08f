"""Payload encryption (AES-256-GCM) with key rotation, and the keys' configuration.

Every payload (activity inputs and results, workflow inputs, query answers,
``SagaFailed`` details) is encrypted before it leaves the process, so Temporal's
database and Web UI hold ciphertext only (the saga data converter keeps its public
text, step names and the trace, out of the codec: see ``temporal_saga.client``). Each encrypted
payload names its key in its metadata, so keys rotate: the first configured key
encrypts, every configured key decrypts.

Keys come from ``TEMPORAL_SAGA_KEYS`` (``id:base64key,id2:base64key``, the first one
current) or from the file named by ``TEMPORAL_SAGA_KEY_FILE`` (one ``id:base64key``
per line, the first one current). A key is 32 random bytes, base64-encoded;
``temporal-saga new-key --id 2027-01`` prints a fresh entry. To rotate, put
the new entry first and keep the old ones after it as long as histories encrypted
with them must stay readable.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
_NONCE = 12


def new_key(key_id: str) -> str:
    """A fresh random key as an ``id:base64key`` entry (for a key file or the env)."""
    if not key_id or ":" in key_id or "," in key_id:
        raise ValueError(f"a key id must be non-empty, without ':' or ',': {key_id!r}")
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def parse_keys(text: str, source: str) -> dict[str, bytes]:
    """Parse ``id:base64key`` entries (comma- or newline-separated), first one first.

    Raises:
        ValueError: An entry without an id, a key that is not base64 or not 32 bytes.
    """
    keys: dict[str, bytes] = {}
    for entry in text.replace("\n", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep or not key_id.strip():
            raise ValueError(f"{source}: expected 'id:base64key', got {entry[:12]!r}...")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise ValueError(f"{source}: key {key_id!r} is not valid base64") from None
        if len(key) != 32:
            raise ValueError(f"{source}: key {key_id!r} has {len(key)} bytes; AES-256 needs 32")
        keys[key_id.strip()] = key
    if not keys:
        raise ValueError(f"{source}: no keys")
    return keys


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM payload codec; the first key encrypts, all keys decrypt.

    Args:
        keys: Key id to 32-byte key, the current (encrypting) key first.
    """

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise ValueError("EncryptionCodec needs at least one key")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._current = next(iter(keys))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> EncryptionCodec | None:
        """The codec configured by the environment, or None if no key is configured.

        Raises:
            ValueError: The configured keys are malformed (say which and why).
        """
        if environ.get("TEMPORAL_SAGA_KEYS"):
            return cls(parse_keys(environ["TEMPORAL_SAGA_KEYS"], "TEMPORAL_SAGA_KEYS"))
        if environ.get("TEMPORAL_SAGA_KEY_FILE"):
            path = Path(environ["TEMPORAL_SAGA_KEY_FILE"])
            try:
                text = path.read_text()
            except OSError as err:
                raise ValueError(
                    f"TEMPORAL_SAGA_KEY_FILE: cannot read {path}: {err.strerror}"
                ) from None
            return cls(parse_keys(text, str(path)))
        return None

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload with the current key."""
        cipher = self._ciphers[self._current]
        encoded = []
        for payload in payloads:
            nonce = os.urandom(_NONCE)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), self._current.encode())
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID: self._current.encode()},
                    data=nonce + sealed,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt encrypted payloads (with the key they name); pass others through.

        Raises:
            ValueError: A payload's key is unknown here, or it does not decrypt
                (tampered with, or a different key under the same id).
        """
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)
                continue
            key_id = payload.metadata.get(KEY_ID, b"").decode()
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                raise ValueError(f"payload encrypted with unknown key {key_id!r}")
            data = payload.data
            try:
                plain = cipher.decrypt(data[:_NONCE], data[_NONCE:], key_id.encode())
            except InvalidTag:
                raise ValueError(f"payload does not decrypt with key {key_id!r}") from None
            decoded.append(Payload.FromString(plain))
        return decoded
