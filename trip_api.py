"""The trip shop's HTTP endpoint: an answer within the request, the rest in the background.

    python trip_api.py [--port 8000]      # with worker.py running

``POST /trips`` with a trip request as JSON (the fields of ``TripRequest``) starts the
trip saga with an early answer (``temporal_saga.client.start_until_step``): as soon as
the hotel room is booked, the scarce part of a trip, it answers ``201`` with the
room, while the flight, tickets, payment and insurance finish durably in the
background; if the saga fails first it answers ``409`` with the reason (the saga undoes
what it did, in the background too). ``GET /trips/ID`` gives the saga's state and
trace as it goes on. A request that is not a trip gets ``400`` with what is wrong.
"""

from __future__ import annotations

import argparse
import os
import uuid

from aiohttp import web
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from activities.models import HotelBooking, TripRequest
from temporal_saga import SagaFailed
from temporal_saga.client import NotASaga, connect, load_state, render_trace, start_until_step
from workflows.trip import TASK_QUEUE, BuyTripPackage

#: The step whose success answers the request.
ANSWER_AT = "book hotel room"

_CLIENT = web.AppKey("client", Client)
_QUEUE = web.AppKey("task_queue", str)


async def buy(request: web.Request) -> web.Response:
    """``POST /trips``: start the trip saga; answer once its hotel room is booked."""
    try:
        trip = TripRequest.model_validate_json(await request.read())
    except ValidationError as err:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
        return web.json_response({"status": "invalid", "problems": problems}, status=400)
    # No personal data in ids: Temporal stores ids in clear, even with encryption.
    workflow_id = f"trip-{uuid.uuid4().hex[:12]}"
    try:
        hotel = await start_until_step(
            request.app[_CLIENT],
            BuyTripPackage.run,
            trip,
            step=ANSWER_AT,
            id=workflow_id,
            task_queue=request.app[_QUEUE],
            result_type=HotelBooking,
        )
    except SagaFailed as failed:
        return web.json_response(
            {"status": "failed", "reason": failed.reason, "trip": f"/trips/{workflow_id}"},
            status=409,
        )
    return web.json_response(
        {
            "status": "booked",
            "hotel": hotel.model_dump(mode="json"),
            "trip": f"/trips/{workflow_id}",
        },
        status=201,
    )


async def show(request: web.Request) -> web.Response:
    """``GET /trips/ID``: the trip saga's state and trace, as it goes on."""
    handle = request.app[_CLIENT].get_workflow_handle(request.match_info["workflow_id"])
    try:
        state, _ = await load_state(handle)
    except (NotASaga, RPCError):  # not a saga, or no such workflow
        raise web.HTTPNotFound(text="no such trip") from None
    return web.json_response({"state": state.model_dump(mode="json"), "trace": render_trace(state)})


def app(client: Client, task_queue: str = TASK_QUEUE) -> web.Application:
    """The endpoint's application, on ``client``, for workers on ``task_queue``."""
    application = web.Application()
    application[_CLIENT], application[_QUEUE] = client, task_queue
    application.add_routes([web.post("/trips", buy), web.get("/trips/{workflow_id}", show)])
    return application


async def _serve() -> web.Application:
    return app(await connect())  # TEMPORAL_ADDRESS, like the temporal CLI


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The trip shop's HTTP endpoint: POST /trips answers once the hotel "
        "room is booked (or why not); the rest of the trip finishes in the background."
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("TRIP_API_PORT", 8000)),
        help="the port to listen on (default: TRIP_API_PORT, else 8000)",
    )
    args = parser.parse_args()
    web.run_app(_serve(), port=args.port)


if __name__ == "__main__":
    main()
