"""Encryption for sagas (the ``temporal-saga[encryption]`` extra).

* :class:`EncryptionCodec`: AES-256-GCM payload encryption with key rotation; the
  saga data converter uses it when keys are configured (``TEMPORAL_SAGA_KEYS`` or
  ``TEMPORAL_SAGA_KEY_FILE``), keeping step names and the trace (public text) readable.
* :func:`start_codec_server` (or :func:`codec_server`, the aiohttp application):
  the remote codec server the Web UI and the ``temporal`` CLI
  call to show decrypted payloads to signed-in operators
  (``temporal-saga codec-server``).
* :func:`audit_history`: what a saga's history holds in clear
  (``temporal-saga audit``).
"""

from ._audit import audit_history
from ._codec import EncryptionCodec, new_key
from ._server import codec_server, start_codec_server

__all__ = [
    "EncryptionCodec",
    "audit_history",
    "codec_server",
    "new_key",
    "start_codec_server",
]
