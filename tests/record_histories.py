"""Re-record the stored workflow histories that ``test_replay.py`` replays.

Run ``make histories`` after a deliberate change to a workflow's commands, and commit
the JSON files with it; ``python -m tests.record_histories NAME ...`` records only the
named shapes. Every workflow shape the project ships has one history. Histories
recorded by an earlier release are kept as they are where the shape has not changed:
replaying them shows that sagas in flight survive an upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowQueryFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.models import TripRequest
from activities.trip import ALL as TRIP_ACTIVITIES
from insurer.handler import InsuranceHandler
from insurer.service import INSURER_NAMESPACE
from insurer.setup import ensure as ensure_insurer_endpoint
from temporal_saga import SagaState, SagaStatus
from temporal_saga._protocol import SAGA_EVENT, SAGA_STATE_QUERY, SAGA_STATUS_ATTRIBUTE
from temporal_saga.client import SagaPlugin, data_converter
from temporal_saga.testing import fake
from workflows.group_trip import BookGroupTrip, GroupTripRequest
from workflows.trip import BuyTripPackage

from .conftest import OTHER_TEAM, make_endpoint, temporal_binary
from .event_sagas import ShopBlockSaga, ShopInput, ShopSaga, refund, release, reserve, ship
from .nexus_team import (
    CALLER_ACTIVITIES,
    Cover,
    Plan,
    Trip,
    team_worker,
)
from .scripted import (
    BlockSaga,
    BlockSpec,
    CrowdedCancelsSaga,
    CrowdedSaga,
    CrowdedSpec,
    HumanBlockSaga,
    NestedSaga,
    NestedSpec,
    PivotBlockSaga,
    RetryLoopSaga,
    ScriptedSaga,
    ScriptedSpec,
    ScriptedStep,
    do_step,
    undo_step,
)

HISTORIES = Path(__file__).parent / "histories"
WORKFLOWS = [
    ScriptedSaga,
    CrowdedSaga,
    CrowdedCancelsSaga,
    NestedSaga,
    RetryLoopSaga,
    BlockSaga,
    PivotBlockSaga,
    HumanBlockSaga,
    BuyTripPackage,
    BookGroupTrip,
    ShopSaga,
    ShopBlockSaga,
    Trip,
]

# The event sagas' activities, faked (tests/event_sagas.py).
SHOP_ACTIVITIES = [
    fake(reserve, returns="reserved"),
    fake(release),
    fake(refund),
    fake(ship, returns=lambda amount: f"shipped for {amount}"),
]


@dataclass(frozen=True)
class Shape:
    workflow: type
    arg: Any
    cancel_after: float | None = None  # seconds after start, to record a cancellation
    cancels: int = 1  # how many cancel requests then
    terminate_child: str | None = None  # the id suffix of a child to terminate then
    # Operators' updates (name, input), sent in turn once the saga waits for a human.
    operate: tuple[tuple[str, dict[str, Any]], ...] = ()
    # Events (saga_event Updates), sent in turn as soon as the saga started.
    events: tuple[dict[str, Any], ...] = ()


def _scripted(*steps: ScriptedStep, **options: Any) -> ScriptedSpec:
    return ScriptedSpec(run="record", steps=list(steps), **options)


def _trip(
    traveller: str, check_in: date = date(2027, 6, 1), destination: str = "Venice"
) -> TripRequest:
    return TripRequest(
        traveller=traveller,
        passport="P1234567",
        origin="Lisbon",
        destination=destination,
        check_in=check_in,
        nights=2,
    )


# The other team of tests/nexus_team.py, as the recording reaches it.
TEAM_ENDPOINT = "recorded-team"
TEAM_DB = os.path.join(tempfile.gettempdir(), "recorded-team.db")


def _plan(**options: Any) -> Plan:
    cover = {k: options.pop(k) for k in list(options) if k in Cover.model_fields}
    return Plan(endpoint=TEAM_ENDPOINT, cover=Cover(db=TEAM_DB, holder="Rec", **cover), **options)


# A saga that fails and compensates slowly: time to cancel it while it compensates.
_SLOW_UNDO = (
    ScriptedStep(name="a", undo_sleep=2),
    ScriptedStep(name="c", undo_sleep=2),
    ScriptedStep(name="b", sleep=0.3, fail="boom"),
)


_PAYMENT = {"event": "payment", "id": "pay-7", "data": {"amount": 120, "reference": "pay-7"}}

SLOW = ScriptedStep(name="slow", sleep=30, heartbeat_timeout=1)

# b's compensation fails for good; the saga waits for a human (NEEDS_HUMAN).
_REFUND_REFUSED = (
    ScriptedStep(name="a"),
    ScriptedStep(name="b", undo_fail="refund refused"),
    ScriptedStep(name="c", after=["a", "b"], fail="no rooms"),
)
_STUCK_AFTER_PIVOT = (
    ScriptedStep(name="pay", pivot=True, compensate=False),
    ScriptedStep(name="ship", after=["pay"], compensate=False, fail="no truck"),
    ScriptedStep(name="notify", after=["ship"], compensate=False),
)

# Recorded in this order: the second trip finds the hotel full because of the first.
SHAPES: dict[str, Shape] = {
    "success": Shape(
        ScriptedSaga,
        _scripted(
            ScriptedStep(name="a", sleep=0.1),
            ScriptedStep(name="b", sleep=0.3),
            ScriptedStep(name="c", after=["a"]),
        ),
    ),
    "failure": Shape(
        ScriptedSaga,
        _scripted(
            ScriptedStep(name="a", sleep=0.1),
            ScriptedStep(name="b", fail="no available hotel rooms", sleep=0.3),
            ScriptedStep(name="c", after=["a"]),
        ),
    ),
    "compensation_failure": Shape(
        ScriptedSaga,
        _scripted(
            ScriptedStep(name="a", undo_fail="cannot cancel"),
            ScriptedStep(name="b", fail="boom", sleep=0.3),
        ),
    ),
    "sequential_compensation": Shape(
        ScriptedSaga,
        _scripted(
            ScriptedStep(name="a"),
            ScriptedStep(name="b", sleep=0.2),
            ScriptedStep(name="x", sleep=0.4, fail="boom"),
            parallel_compensation=False,
        ),
    ),
    "cancellation": Shape(ScriptedSaga, _scripted(ScriptedStep(name="a"), SLOW), cancel_after=1),
    "deadline": Shape(ScriptedSaga, _scripted(ScriptedStep(name="a"), SLOW, timeout=1)),
    "pivot": Shape(
        ScriptedSaga,
        _scripted(
            ScriptedStep(name="reserve"),
            ScriptedStep(name="charge", after=["reserve"], pivot=True, compensate=False),
            ScriptedStep(name="ship", after=["charge"], compensate=False, transient_failures=1),
            ScriptedStep(name="mail", after=["charge"], compensate=False, fail="no address"),
        ),
    ),
    "nested": Shape(
        NestedSaga,
        NestedSpec(
            run="record",
            child=_scripted(ScriptedStep(name="room")),
            sibling_fails=True,
        ),
    ),
    "trip_success": Shape(BuyTripPackage, _trip("Maria")),
    "trip_hotel_full": Shape(BuyTripPackage, _trip("Kevin")),
    # Recorded after the SagaStatus check (a local activity, patched in) was added; the
    # two above predate it and show that sagas in flight then still replay.
    "trip_success_checked": Shape(BuyTripPackage, _trip("Carla", date(2027, 8, 1))),
    # After the conditional insurance step was added (patched in): Venice is insured.
    "trip_insured": Shape(BuyTripPackage, _trip("Dora", date(2027, 9, 1))),
    # The same step with since= (decided before its when=): insured, and not (a cheap
    # trip records the patch, then skips the step for its fare).
    "trip_insured_since": Shape(BuyTripPackage, _trip("Ezra", date(2027, 10, 1))),
    "trip_cheap_since": Shape(BuyTripPackage, _trip("Fay", date(2027, 10, 1), "Paris")),
    # After the payment was added (since="trip-payment"): the card charged, then the
    # provider's confirmation, an event step (prompt; early, so kept; never: undone).
    "trip_paid": Shape(BuyTripPackage, _trip("Gil", date(2027, 11, 2))),
    "trip_paid_early": Shape(
        BuyTripPackage,
        _trip("Hana", date(2027, 11, 2), "Paris").model_copy(update={"confirmation": "early"}),
    ),
    "trip_payment_never_confirmed": Shape(
        BuyTripPackage,
        _trip("Ivo", date(2027, 11, 2), "Paris").model_copy(update={"confirmation": "never"}),
    ),
    "cancel_while_compensating": Shape(
        ScriptedSaga, _scripted(*_SLOW_UNDO), cancel_after=1.2, cancels=2
    ),
    "cancel_while_compensating_sequential": Shape(
        ScriptedSaga, _scripted(*_SLOW_UNDO, parallel_compensation=False), cancel_after=1.2
    ),
    "retry_loop": Shape(
        RetryLoopSaga,
        [
            _scripted(ScriptedStep(name="a"), ScriptedStep(name="b", sleep=0.3, fail="full")),
            _scripted(ScriptedStep(name="a"), ScriptedStep(name="b")),
        ],
    ),
    "nested_child_terminated": Shape(
        NestedSaga,
        NestedSpec(run="record", child=_scripted(ScriptedStep(name="room", sleep=30))),
        cancel_after=1,
        terminate_child="/parent/child saga",
    ),
    "nested_child_cannot_undo": Shape(
        NestedSaga,
        NestedSpec(
            run="record",
            child=_scripted(
                ScriptedStep(name="room", undo_fail="cannot cancel"),
                ScriptedStep(name="pay", sleep=0.3, fail="declined"),
            ),
        ),
    ),
    # Conditional steps: b's condition holds, c's does not (skipped), d runs after c.
    "conditional": Shape(
        ScriptedSaga,
        _scripted(
            ScriptedStep(name="a"),
            ScriptedStep(name="b", after=["a"], when=("a", "do a")),
            ScriptedStep(name="c", after=["a"], when=("a", "nope")),
            ScriptedStep(name="d", after=["c"], fail="boom"),
        ),
    ),
    # The imperative form: a branch, an alternative after a caught failure, a fan-out;
    # then a late failure undone in the code's reverse order.
    # Other tasks of the workflow issue commands at every loop moment around the
    # saga's: these fix the moment each of the saga's commands is issued (_turns.py).
    "crowded_success": Shape(CrowdedSaga, CrowdedSpec(run="record")),
    "crowded_failure": Shape(CrowdedSaga, CrowdedSpec(run="record", fail=True)),
    "crowded_block_success": Shape(CrowdedSaga, CrowdedSpec(run="record", form="block")),
    "crowded_block_failure": Shape(CrowdedSaga, CrowdedSpec(run="record", form="block", fail=True)),
    # And each saga's task cancelled by another task at each moment of its start and
    # of its end (the shields' cancel paths).
    "crowded_cancels": Shape(CrowdedCancelsSaga, "record"),
    "block_success": Shape(BlockSaga, BlockSpec(run="record", fail={"hotel": "full"})),
    "block_failure": Shape(BlockSaga, BlockSpec(run="record", fail={"pay": "declined"})),
    "block_cancelled": Shape(
        BlockSaga, BlockSpec(run="record", sleep={"ticket 1": 30}), cancel_after=1.5
    ),
    "block_pivot": Shape(PivotBlockSaga, BlockSpec(run="record", ship_failures=4)),
    "block_needs_human": Shape(
        HumanBlockSaga,
        "record",
        operate=(("saga_resolve", {"step": "a", "note": "refunded by phone"}),),
    ),
    # Waiting for a human: a retry that fails again, then one with a new argument.
    "needs_human_retried": Shape(
        ScriptedSaga,
        _scripted(*_REFUND_REFUSED, human_timeout=None),
        operate=(
            ("saga_retry", {"step": "b", "by": "alice"}),
            ("saga_retry", {"step": "b", "arg": {"run": "record", "step": "b"}}),
        ),
    ),
    "needs_human_given_up": Shape(
        ScriptedSaga,
        _scripted(*_REFUND_REFUSED, human_timeout=None),
        operate=(("saga_give_up", {"note": "written off", "by": "bob"}),),
    ),
    "needs_human_timed_out": Shape(ScriptedSaga, _scripted(*_REFUND_REFUSED, human_timeout=1)),
    # Past the pivot: ship resolved by hand, then notify runs by itself.
    "needs_human_after_pivot": Shape(
        ScriptedSaga,
        _scripted(*_STUCK_AFTER_PIVOT, human_timeout=None),
        operate=(("saga_resolve", {"step": "ship", "note": "sent by courier"}),),
    ),
    # A step served by another language: the car comes from the Node.js worker (which
    # this script starts for it), then the hotel is down: Node undoes the car.
    "trip_car": Shape(
        BuyTripPackage,
        _trip("Gus", date(2027, 11, 1), "Rome").model_copy(
            update={"car": True, "faults": {"hotel": "down"}}
        ),
    ),
    # Venice's hotel has one room: the second traveller's trip fails, the first is undone.
    "group_trip": Shape(
        BookGroupTrip,
        GroupTripRequest(trips=[_trip("Ann", date(2027, 7, 1)), _trip("Bob", date(2027, 7, 1))]),
    ),
    # Event steps: a payment kept until the approval came, then taken.
    "event_kept_then_taken": Shape(
        ShopSaga,
        ShopInput(approval=True),
        events=(_PAYMENT, {"event": "approval", "id": "manager-1"}),
    ),
    # No payment within a second: the reservation is released.
    "event_timed_out": Shape(ShopSaga, ShopInput(wait_seconds=1)),
    # Cancelled while the payment step waits: refunded (uncertain) and released.
    "event_cancelled_while_waiting": Shape(ShopSaga, ShopInput(), cancel_after=1.5),
    # The imperative form, its payment sent before its step was added.
    "event_block": Shape(ShopBlockSaga, ShopInput(), events=(_PAYMENT,)),
    # The insurer as another team, over Nexus: insured; then undone (no payment).
    "trip_insured_nexus": Shape(BuyTripPackage, _trip("Hana", date(2027, 12, 1))),
    "trip_insurance_cancelled_nexus": Shape(
        BuyTripPackage,
        _trip("Ivo", date(2027, 12, 10)).model_copy(update={"confirmation": "never"}),
    ),
    # Nexus steps (tests/nexus_team.py): the operation fails (not undone); a later
    # step fails (the operation undone by another); a workflow-backed operation times
    # out (cancelled through Nexus, then undone) or runs when the saga is cancelled;
    # a compensation that needs a human, retried; a saga behind the endpoint fails.
    "nexus_step_failed": Shape(Trip, _plan(refuse=True)),
    "nexus_undone": Shape(Trip, _plan(charge_fails=True)),
    "nexus_timed_out": Shape(Trip, _plan(operation="underwrite", seconds=30, timeout_seconds=1)),
    "nexus_cancelled": Shape(Trip, _plan(operation="underwrite", seconds=30), cancel_after=1.5),
    "nexus_needs_human_retried": Shape(
        Trip,
        _plan(charge_fails=True, undo_fails=True),
        operate=(
            (
                "saga_retry",
                {"step": "buy insurance", "arg": _plan().cover.model_dump(mode="json")},
            ),
        ),
    ),
    "nexus_nested_failed": Shape(Trip, _plan(operation="nested", fail_nested=True)),
}


async def record(client: Client, queue: str, name: str, shape: Shape) -> None:
    handle = await client.start_workflow(
        shape.workflow.run,  # type: ignore[attr-defined]
        shape.arg,
        id=f"history-{name}",  # the id test_replay.py replays it under
        task_queue=queue,
    )
    for sent in shape.events:
        await handle.execute_update(SAGA_EVENT, sent, result_type=str)
    if shape.cancel_after is not None:
        await asyncio.sleep(shape.cancel_after)
        if shape.terminate_child is not None:
            child = client.get_workflow_handle(handle.id + shape.terminate_child)
            await child.terminate("recorded")
        else:
            for _ in range(shape.cancels):
                await handle.cancel()
    if shape.operate:
        while True:
            with contextlib.suppress(RPCError, WorkflowQueryFailedError):
                state = await handle.query(SAGA_STATE_QUERY, result_type=SagaState)
                if state.status is SagaStatus.NEEDS_HUMAN:
                    break
            await asyncio.sleep(0.1)
        for update, request in shape.operate:
            await handle.execute_update(update, request, result_type=str)
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    history = await handle.fetch_history()
    (HISTORIES / f"{name}.json").write_text(history.to_json())


# Histories of an earlier version of the library, kept as they are: replaying them
# proves that sagas in flight across an upgrade still replay. `make histories` leaves
# them alone (name one to re-record it anyway).
FROZEN = {
    "trip_success",
    "trip_hotel_full",
    "trip_success_checked",
    "trip_insured",
    # Recorded before the trip's payment steps (since="trip-payment") existed.
    "trip_insured_since",
    "trip_cheap_since",
}


async def main() -> None:
    HISTORIES.mkdir(exist_ok=True)
    os.environ["TRIP_DATA_DIR"] = tempfile.mkdtemp(prefix="trip-services-")
    queue = f"record-{uuid.uuid4()}"
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=data_converter(),
        plugins=[SagaPlugin()],
        search_attributes=[SAGA_STATUS_ATTRIBUTE],
        dev_server_extra_args=["--namespace", OTHER_TEAM, "--namespace", INSURER_NAMESPACE],
    ) as env:
        # The Node.js worker of the trip's car step (trip_car needs it).
        folder = Path(__file__).parent.parent / "services" / "car-rental"
        if not shutil.which("node") or not (folder / "node_modules").is_dir():
            raise SystemExit("needs Node.js and `npm ci --prefix services/car-rental`")
        car_rental = subprocess.Popen(
            ["node", "worker.js"],
            cwd=folder,
            env={**os.environ, "TEMPORAL_ADDRESS": env.client.service_client.config.target_host},
        )
        # The other teams: the example's insurer, and the Nexus tests' team.
        address = env.client.service_client.config.target_host
        team = await Client.connect(address, namespace=OTHER_TEAM, plugins=[SagaPlugin()])
        insurer = await Client.connect(address, namespace=INSURER_NAMESPACE, plugins=[SagaPlugin()])
        ensure_insurer_endpoint(address, task_queue=queue)
        await make_endpoint(env.client, TEAM_ENDPOINT, queue)
        with car_rental, ThreadPoolExecutor(max_workers=8) as executor:
            try:
                async with (
                    Worker(
                        env.client,
                        task_queue=queue,
                        workflows=WORKFLOWS,
                        activities=[
                            do_step,
                            undo_step,
                            *TRIP_ACTIVITIES,
                            *SHOP_ACTIVITIES,
                            *CALLER_ACTIVITIES,
                        ],
                        activity_executor=executor,
                    ),
                    Worker(insurer, task_queue=queue, nexus_service_handlers=[InsuranceHandler()]),
                    team_worker(team, queue, executor),
                ):
                    for name, shape in SHAPES.items():
                        if (name not in sys.argv[1:]) if sys.argv[1:] else (name in FROZEN):
                            continue
                        await record(env.client, queue, name, shape)
                        print(f"recorded {name}")
            finally:
                car_rental.terminate()


if __name__ == "__main__":
    asyncio.run(main())
