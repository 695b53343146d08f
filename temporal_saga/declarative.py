"""Sagas described as data: ``SagaSpec``, run by the generic ``DeclarativeSaga`` workflow.

Register ``DeclarativeSaga`` on a worker next to your activities; then any client, in
any language, or the ``temporal`` CLI starts a saga by sending a ``SagaSpec`` as JSON::

    temporal workflow start --type DeclarativeSaga --task-queue trip-saga \\
        --input-file spec.json

A step is an activity (``StepSpec``: ``"activity"``), an event step (``EventSpec``:
``"event"`` and ``"timeout_seconds"``) or another team's Nexus operation
(``NexusStepSpec``: ``"nexus"``). A spec that fails validation
fails the workflow at once with pydantic's message,
which names the field (``steps.1.step.activity``); dependency errors fail it with a
``SagaDefinitionError``. Nothing is scheduled in either case.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Tag,
    ValidationError,
    model_validator,
)
from temporalio import workflow

from ._errors import SagaDefinitionError
from ._nexus import NexusOperation
from ._options import COMPENSATION_DEFAULTS, STEP_DEFAULTS, ActivityOptions
from ._saga import Saga
from ._state import SagaResult
from ._step import Step
from ._versions import Patch, deprecated_patch

__all__ = ["DeclarativeSaga", "SagaSpec"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptionsSpec(_Spec):
    """Activity options as JSON: seconds for durations, retry fields flattened.

    Retry fields given here change the default retry policy (steps: 3 attempts;
    compensations: unlimited) field by field.
    """

    task_queue: str | None = None
    start_to_close_seconds: PositiveFloat | None = None
    schedule_to_close_seconds: PositiveFloat | None = None
    schedule_to_start_seconds: PositiveFloat | None = None
    heartbeat_seconds: PositiveFloat | None = None
    maximum_attempts: int | None = Field(default=None, ge=0)
    initial_interval_seconds: PositiveFloat | None = None
    maximum_interval_seconds: PositiveFloat | None = None
    backoff_coefficient: float | None = Field(default=None, ge=1)
    non_retryable_error_types: list[str] | None = None

    def to_options(self, defaults: ActivityOptions) -> ActivityOptions:
        """These options over ``defaults`` (for the retry policy, field by field)."""
        options: ActivityOptions = {}
        if self.task_queue is not None:
            options["task_queue"] = self.task_queue
        for field, option in (
            ("start_to_close_seconds", "start_to_close_timeout"),
            ("schedule_to_close_seconds", "schedule_to_close_timeout"),
            ("schedule_to_start_seconds", "schedule_to_start_timeout"),
            ("heartbeat_seconds", "heartbeat_timeout"),
        ):
            seconds = getattr(self, field)
            if seconds is not None:
                options[option] = timedelta(seconds=seconds)  # type: ignore[literal-required]
        retry: dict[str, Any] = {}
        if self.maximum_attempts is not None:
            retry["maximum_attempts"] = self.maximum_attempts
        if self.initial_interval_seconds is not None:
            retry["initial_interval"] = timedelta(seconds=self.initial_interval_seconds)
        if self.maximum_interval_seconds is not None:
            retry["maximum_interval"] = timedelta(seconds=self.maximum_interval_seconds)
        if self.backoff_coefficient is not None:
            retry["backoff_coefficient"] = self.backoff_coefficient
        if self.non_retryable_error_types is not None:
            retry["non_retryable_error_types"] = self.non_retryable_error_types
        if retry:
            options["retry_policy"] = dataclasses.replace(defaults["retry_policy"], **retry)
        return options


class ConditionSpec(_Spec):
    """Run a step only if an earlier step's result passes a test (else it is skipped).

    ``{"step": "book plane ticket", "field": "price", "above": 500}`` reads the field
    ``price`` of that step's result (a dotted path into the JSON; empty: the whole
    result) and compares it. Exactly one of ``equals``, ``not_equals``, ``above`` and
    ``below``. The step read must be among the conditioned step's ``after``, so its
    result is known by then; a field the result lacks fails the step.
    """

    step: str = Field(min_length=1)
    field: str = ""
    equals: JsonValue = None
    not_equals: JsonValue = None
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _one_test(self) -> ConditionSpec:
        given = [
            name
            for name in ("equals", "not_equals", "above", "below")
            if name in self.model_fields_set
        ]
        if len(given) != 1:
            raise ValueError(
                f"a condition takes exactly one of equals, not_equals, above, below; got {given}"
            )
        return self

    def holds(self, result: Any) -> bool:
        """Whether ``result`` (the step's, as JSON) passes the test."""
        value = result
        for part in filter(None, self.field.split(".")):
            value = value[part] if isinstance(value, dict) else getattr(value, part)
        if "equals" in self.model_fields_set:
            return bool(value == self.equals)
        if "not_equals" in self.model_fields_set:
            return bool(value != self.not_equals)
        if self.above is not None:
            return bool(value > self.above)
        return bool(value < self.below)


class DeprecatedPatchSpec(_Spec):
    """``{"deprecated": "PATCH_ID"}``: step 2 of a versioned step's life cycle (see
    :func:`temporal_saga.deprecated_patch`)."""

    deprecated: str = Field(min_length=1)


_PatchId = Annotated[str, Field(min_length=1)]


def _patch(spec: str | DeprecatedPatchSpec | None) -> Patch | None:
    return deprecated_patch(spec.deprecated) if isinstance(spec, DeprecatedPatchSpec) else spec


class NexusSpec(_Spec):
    """A Nexus operation (see :class:`temporal_saga.nexus.NexusOperation`): ``{"endpoint":
    "trip-insurer", "service": "Insurance", "operation": "buy",
    "schedule_to_close_seconds": 30}``; its result is the operation's JSON output."""

    endpoint: str = Field(min_length=1)
    service: str = Field(min_length=1)
    operation: str = Field(min_length=1)
    schedule_to_close_seconds: PositiveFloat | None = None

    def to_operation(self) -> NexusOperation:
        seconds = self.schedule_to_close_seconds
        return NexusOperation(
            self.endpoint,
            self.service,
            self.operation,
            schedule_to_close_timeout=timedelta(seconds=seconds) if seconds else None,
        )


class _StepBase(_Spec):
    """What every kind of step has (see :meth:`temporal_saga.Saga.step`).

    ``compensate`` is an activity's name, or a Nexus operation (a ``NexusSpec``
    object). ``compensate_arg``, when present (even ``null``), replaces the step's
    argument for the compensation; when absent, the compensation gets the step's
    argument (an event step's: none). ``label``, ``since`` and ``until`` are as in
    :meth:`temporal_saga.Saga.step`; a deprecated patch is ``{"deprecated": "PATCH_ID"}``.
    """

    name: str = Field(min_length=1)
    label: str | None = Field(default=None, min_length=1)
    compensate: Annotated[str, Field(min_length=1)] | NexusSpec | None = None
    compensate_arg: JsonValue = None
    compensation_name: str | None = None
    after: list[str] = Field(default_factory=list)
    when: ConditionSpec | None = None
    since: _PatchId | DeprecatedPatchSpec | None = None
    until: _PatchId | DeprecatedPatchSpec | None = None
    compensation_options: OptionsSpec = OptionsSpec()


class StepSpec(_StepBase):
    """One step: an activity by its registered name, with a JSON argument."""

    activity: str = Field(min_length=1)
    arg: JsonValue = None
    compensate_on_failure: bool = False
    options: OptionsSpec = OptionsSpec()


class EventSpec(_StepBase):
    """An event step (:meth:`temporal_saga.Saga.event`): it succeeds when the event
    ``event`` reaches the saga within ``timeout_seconds``; its result is the event's
    JSON payload. ``{"name": "payment confirmed", "event": "payment",
    "timeout_seconds": 3600, "after": ["charge card"]}``."""

    event: str = Field(min_length=1, max_length=200)
    timeout_seconds: PositiveFloat


class NexusStepSpec(_StepBase):
    """A step that is another team's Nexus operation, with a JSON argument (its
    input): ``{"name": "buy travel insurance", "nexus": {...}, "arg": {...},
    "compensate": {"endpoint": ..., "service": ..., "operation": "cancel"}}``. Activity
    options do not apply to it (``schedule_to_close_seconds`` is the operation's)."""

    nexus: NexusSpec
    arg: JsonValue = None
    compensate_on_failure: bool = False


def _kind(step: Any) -> str:
    """An event step has ``"event"``, a Nexus step ``"nexus"``; every other step is
    an activity's."""
    if isinstance(step, EventSpec | NexusStepSpec):
        return "event" if isinstance(step, EventSpec) else "nexus"
    for kind in ("event", "nexus"):
        if isinstance(step, dict) and kind in step:
            return kind
    return "step"


# Errors name the kind: ``steps.1.step.activity``, ``steps.2.event.timeout_seconds``.
_AnyStep = Annotated[
    Annotated[StepSpec, Tag("step")]
    | Annotated[EventSpec, Tag("event")]
    | Annotated[NexusStepSpec, Tag("nexus")],
    Discriminator(_kind),
]


class SagaSpec(_Spec):
    """A whole saga as data (see :class:`temporal_saga.Saga` for the semantics)."""

    name: str = Field(min_length=1)
    steps: list[_AnyStep] = Field(min_length=1)
    parallel_compensation: bool = True
    cancel_in_flight: bool = False
    timeout_seconds: PositiveFloat | None = None
    max_parallelism: PositiveInt | None = None
    search_attributes: bool = False
    # How long a saga that needs a human waits for one (None: as long as it takes; 0:
    # it does not wait).
    human_timeout_seconds: NonNegativeFloat | None = None
    options: OptionsSpec = OptionsSpec()
    compensation_options: OptionsSpec = OptionsSpec()

    def build(self) -> Saga:
        """The :class:`Saga` this spec describes (raises ``SagaDefinitionError``)."""
        step_defaults = self.options.to_options(STEP_DEFAULTS)
        compensation_defaults = self.compensation_options.to_options(COMPENSATION_DEFAULTS)
        saga = Saga(
            self.name,
            parallel_compensation=self.parallel_compensation,
            cancel_in_flight=self.cancel_in_flight,
            timeout=timedelta(seconds=self.timeout_seconds) if self.timeout_seconds else None,
            max_parallelism=self.max_parallelism,
            search_attributes=self.search_attributes,
            human_timeout=None
            if self.human_timeout_seconds is None
            else timedelta(seconds=self.human_timeout_seconds),
            compensation_options=compensation_defaults,
            **step_defaults,
        )
        made: dict[str, Step[Any]] = {}
        for step in self.steps:
            compensation: dict[str, Any] = {}
            if step.compensate is not None:
                undo = step.compensate
                compensation = {
                    "compensate": undo if isinstance(undo, str) else undo.to_operation(),
                    "compensation_name": step.compensation_name,
                    "compensation_options": step.compensation_options.to_options(
                        {**COMPENSATION_DEFAULTS, **compensation_defaults}
                    ),
                }
                if "compensate_arg" in step.model_fields_set:
                    compensation["compensate_arg"] = step.compensate_arg
            condition = None
            if step.when is not None:
                if step.when.step not in step.after:
                    raise SagaDefinitionError(
                        f"saga {self.name!r}, step {step.name!r}: its condition reads "
                        f"{step.when.step!r}, which must be in its after="
                    )
                read, test = step.when.step, step.when
                condition = lambda read=read, test=test: test.holds(made[read].result)  # noqa: E731
            common: dict[str, Any] = {
                "label": step.label,
                "after": step.after,
                "when": condition,
                "since": _patch(step.since),
                "until": _patch(step.until),
                **compensation,
            }
            if isinstance(step, EventSpec):
                timeout = timedelta(seconds=step.timeout_seconds)
                made[step.name] = saga.event(step.name, step.event, timeout=timeout, **common)
                continue
            if step.compensate is not None:
                common["compensate_on_failure"] = step.compensate_on_failure
            if isinstance(step, NexusStepSpec):
                made[step.name] = saga.step(
                    step.name, step.nexus.to_operation(), step.arg, **common
                )
                continue
            made[step.name] = saga.step(
                step.name,
                step.activity,
                step.arg,
                **common,
                **step.options.to_options({**STEP_DEFAULTS, **step_defaults}),
            )
        return saga


# A spec that fails validation fails the workflow at once, naming the field, instead
# of retrying the first workflow task forever.
@workflow.defn(name="DeclarativeSaga", failure_exception_types=[ValidationError])
class DeclarativeSaga:
    """The generic workflow that runs a :class:`SagaSpec`; register it on your worker."""

    @workflow.run
    async def run(self, spec: SagaSpec) -> SagaResult:
        """Run the saga the spec describes."""
        return await spec.build().run()
