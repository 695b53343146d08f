"""The helper's saga in a workflow module that imports temporal_saga plainly.

``bench/sagas.py`` imports the engine inside ``workflow.unsafe.imports_passed_through()``,
as the samples do; many workflow modules just write ``from temporal_saga import Saga``.
The workflow sandbox then re-imports the engine for every workflow run, unless the
worker's client has ``SagaPlugin``, which passes ``temporal_saga`` through. The
``import`` phase of ``bench.compare`` measures what that costs.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from temporal_saga import Saga

with workflow.unsafe.imports_passed_through():
    from bench.sagas import RETRY, TIMEOUT, planned


@workflow.defn
class PlainImportSaga:
    """``HelperSaga``, its module importing temporal_saga plainly."""

    @workflow.run
    async def run(self, spec: dict[str, Any]) -> list[str]:
        do, undo, steps = planned(spec)
        saga = Saga("bench", start_to_close_timeout=TIMEOUT, retry_policy=RETRY)
        for name, arg in steps:
            saga.step(name, do, arg, compensate=undo)
        result = await saga.run()
        return [str(r) for r in result.results.values()]
