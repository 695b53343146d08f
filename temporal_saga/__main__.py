"""``python -m temporal_saga``: the ``temporal-saga`` command (see ``client._cli``)."""

from .client._cli import entry_point

entry_point()
