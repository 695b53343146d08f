"""The insurer: another team's service, in its own namespace, behind a Nexus endpoint.

The trip team's saga buys travel insurance through the endpoint ``trip-insurer``
(``insurer.service``: the contract both teams import); the insurer's worker
(``python -m insurer.worker``) serves it in the ``insurer`` namespace, booking in the
insurer's ledger under ``temporal_saga.barrier``, keyed by the saga step's Nexus
headers. See docs/other-teams.md.
"""
