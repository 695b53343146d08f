"""The insurer's implementation of its Nexus service: synchronous operations that book
and cancel in its own ledger.

Each call is a saga step's (or its compensation's): ``idempotency_key()`` reads the
step's key from the operation's ``temporal-saga-key`` header, the same for the
purchase and its cancel, and the ledger books under ``temporal_saga.barrier``, so a
retried purchase returns the first policy, a cancel with nothing to cancel succeeds,
and a purchase arriving after its cancel is refused.
"""

from __future__ import annotations

import asyncio
import logging

import nexusrpc
from nexusrpc.handler import StartOperationContext, service_handler, sync_operation

from activities.ledger import BookingRefused, Ledger
from activities.models import InsuranceBooking, InsuranceRequest
from temporal_saga import idempotency_key

from .service import InsuranceService

log = logging.getLogger("insurer")


def ledger() -> Ledger:
    """The insurer's ledger (``$TRIP_DATA_DIR`` or ``$TRIP_DATABASE_URL``, as the
    trip's services)."""
    return Ledger("insurer", "IN")


def _buy(request: InsuranceRequest, key: str) -> InsuranceBooking:
    booking_id = ledger().book(
        key,
        holder=request.holder,
        city=request.city,
        first_day=request.start,
        last_day=request.end,
    )
    log.info("insurer: policy %s for %s", booking_id, request.holder)
    return InsuranceBooking(
        booking_id=booking_id, holder=request.holder, premium=request.flight_price // 10
    )


def _cancel(request: InsuranceRequest, key: str) -> None:
    ledger().cancel(key)
    log.info("insurer: cancelled the policy of %s", request.holder)


@service_handler(service=InsuranceService)
class InsuranceHandler:
    """The insurer's operations. The ledger blocks: it runs off the event loop, in a
    thread that keeps the operation's context (its headers, for the barrier)."""

    @sync_operation
    async def buy(self, ctx: StartOperationContext, request: InsuranceRequest) -> InsuranceBooking:
        """Insure the trip, for a tenth of its flight's fare (once per saga step)."""
        try:
            return await asyncio.to_thread(_buy, request, idempotency_key())
        except BookingRefused as err:
            raise nexusrpc.OperationError(
                str(err), state=nexusrpc.OperationErrorState.FAILED
            ) from err

    @sync_operation
    async def cancel(self, ctx: StartOperationContext, request: InsuranceRequest) -> None:
        """Cancel the policy the same saga step bought (nothing to cancel is fine)."""
        await asyncio.to_thread(_cancel, request, idempotency_key())
