"""Nexus steps: another team's operations, behind a Nexus endpoint, as a saga's steps
and compensations.

Pass a :class:`NexusOperation` where an activity goes (workflow code imports it from
here, like the engine's other names)::

    from temporal_saga.nexus import NexusOperation

    insurance = saga.step(
        "buy insurance",
        NexusOperation("insurer", InsuranceService, InsuranceService.buy),
        request,
        compensate=NexusOperation("insurer", InsuranceService, InsuranceService.cancel),
    )

The handler reads the step's idempotency key with :func:`temporal_saga.idempotency_key`
(the ``temporal-saga-key`` Nexus header); see docs/other-teams.md.
"""

from ._nexus import NexusOperation

__all__ = ["NexusOperation"]
