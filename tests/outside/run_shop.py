"""Run the shop's saga against the server at argv[1]; print what happened."""

import asyncio
import os
import sys
import uuid

from shop import UNDONE, Order, charge, release, reserve
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from temporal_saga import SagaFailed, data_converter


async def main() -> None:
    client = await Client.connect(sys.argv[1], data_converter=data_converter())
    queue = f"shop-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=queue, workflows=[Order], activities=[reserve, release, charge]
    ):
        try:
            await client.execute_workflow(Order.run, "book", id=queue, task_queue=queue)
        except WorkflowFailureError as err:
            failure = SagaFailed.from_error(err)
            assert failure is not None
            print(f"{failure.state.status.value}: {failure}; undone: {UNDONE}")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (sdk-python issue 300)
