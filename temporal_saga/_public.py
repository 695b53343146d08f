"""Public text: what a saga shows in clear even when its payloads are encrypted.

A saga's step and compensation names (the activities' summaries) and its trace (the
workflow's current details) are the operators' view of a saga. The engine wraps them
in :class:`PublicText`; the saga data converter (:mod:`temporal_saga.client`) tags
their payloads with ``temporal-saga-public`` metadata, and tagged payloads bypass the
payload codec, whichever it is.
"""

from __future__ import annotations

#: Metadata key of a payload that holds public text.
PUBLIC = "temporal-saga-public"


class PublicText(str):
    """Text a saga publishes in clear even when payloads are encrypted."""

    # Checked by attribute, not isinstance: the workflow sandbox re-imports this
    # module, so the engine's PublicText is not the converter's class.
    __temporal_saga_public__ = True
