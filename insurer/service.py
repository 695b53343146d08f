"""The insurer's Nexus service: the contract between the trip team and the insurer.

Both teams import it: the trip saga names its operations, the insurer's worker
implements them (``insurer.handler``). Where it runs: ``INSURER_NAMESPACE``,
``INSURER_TASK_QUEUE``, reached through the endpoint ``INSURER_ENDPOINT``, which
``make demo`` creates (``temporal operator nexus endpoint create``).
"""

from __future__ import annotations

import nexusrpc

from activities.models import InsuranceBooking, InsuranceRequest

INSURER_NAMESPACE = "insurer"
INSURER_TASK_QUEUE = "insurer"
INSURER_ENDPOINT = "trip-insurer"


@nexusrpc.service(name="Insurance")
class InsuranceService:
    """Buy travel insurance, and cancel it (the purchase's compensation)."""

    buy: nexusrpc.Operation[InsuranceRequest, InsuranceBooking]
    cancel: nexusrpc.Operation[InsuranceRequest, None]
