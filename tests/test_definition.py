"""Definition errors: raised when the saga is built, before anything is scheduled."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

import temporal_saga
from temporal_saga import Saga, SagaDefinitionError

from .scripted import do_step, undo_step


def not_an_activity(x: str) -> str:
    return x


def test_public_api_is_pinned() -> None:
    # Its order is ruff's (RUF022); its content is pinned here.
    assert set(temporal_saga.__all__) == {
        "SAGA_STATE_QUERY",
        "DeclarativeSaga",
        "OptionsSpec",
        "SagaSpec",
        "StepSpec",
        "SAGA_STATUS_ATTRIBUTE",
        "SAME_ARG",
        "ActivityOptions",
        "CompensationState",
        "NotASaga",
        "Saga",
        "SagaDefinitionError",
        "SagaFailed",
        "SagaResult",
        "SagaState",
        "SagaStatus",
        "Step",
        "StepState",
        "StepStatus",
        "connect",
        "idempotency_key",
        "follow_trace",
        "load_state",
        "render_trace",
        "state_from_history",
        "watch",
    }


def test_definition_error_is_a_value_error_and_fails_a_workflow() -> None:
    err = SagaDefinitionError("x")
    assert isinstance(err, ValueError) and isinstance(err, ApplicationError)
    assert err.non_retryable


def test_duplicate_step_name() -> None:
    saga = Saga("s")
    saga.step("a", do_step)
    with pytest.raises(ValueError, match="'a': a step with this name already exists"):
        saga.step("a", do_step)


def test_step_of_another_saga() -> None:
    other = Saga("other").step("a", do_step)
    with pytest.raises(ValueError, match="another saga"):
        Saga("s").step("b", do_step, after=[other])


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ({"a": ["ghost"]}, "depends on unknown step 'ghost'"),
        ({"a": ["a"]}, "depends on itself"),
        ({"a": ["c"], "b": ["a"], "c": ["b"]}, "dependency cycle"),
    ],
)
async def test_bad_dependencies_are_rejected_before_anything_runs(
    graph: dict[str, list[str]], message: str
) -> None:
    saga = Saga("s")
    for name, after in graph.items():
        saga.step(name, do_step, after=after)
    # run() raises before touching any workflow API, so this works outside a workflow.
    with pytest.raises(ValueError, match=message):
        await saga.run()


async def test_empty_saga() -> None:
    with pytest.raises(ValueError, match="has no steps"):
        await Saga("s").run()


def test_non_activity_step_and_compensation() -> None:
    saga = Saga("s")
    with pytest.raises(TypeError, match=r"not an activity; decorate it with @activity\.defn"):
        saga.step("a", not_an_activity)
    with pytest.raises(TypeError, match="compensate"):
        saga.step("b", do_step, compensate=not_an_activity)
    with pytest.raises(TypeError, match="expected an activity"):
        saga.step("c", 42)  # type: ignore[call-overload]


def test_dynamic_activity_cannot_be_a_step() -> None:
    @activity.defn(dynamic=True)
    async def anything(args: Sequence[RawValue]) -> None: ...

    with pytest.raises(TypeError, match="dynamic activity"):
        Saga("s").step("a", anything)


def test_unknown_and_mistyped_activity_options() -> None:
    with pytest.raises(ValueError, match="unknown activity option 'start_to_close'"):
        Saga("s").step("a", do_step, start_to_close=timedelta(seconds=1))  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="'start_to_close_timeout' must be a timedelta, not int"):
        Saga("s", start_to_close_timeout=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown activity option 'retries'"):
        Saga("s", compensation_options={"retries": 3})  # type: ignore[typeddict-unknown-key]


def test_compensation_settings_need_a_compensation() -> None:
    with pytest.raises(ValueError, match="without compensate="):
        Saga("s").step("a", do_step, compensate_arg="x")


def test_bad_saga_settings() -> None:
    with pytest.raises(ValueError, match="non-empty name"):
        Saga("")
    with pytest.raises(ValueError, match="positive timedelta"):
        Saga("s", timeout=timedelta(0))


def test_result_before_success_is_an_error() -> None:
    step = Saga("s").step("a", do_step, compensate=undo_step)
    with pytest.raises(RuntimeError, match="'a' has no result: it is PENDING"):
        _ = step.result
