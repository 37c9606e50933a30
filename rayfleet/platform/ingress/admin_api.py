"""What the Validator's routes take and answer: body models and the API document.

:class:`WeightsBody` and :class:`NoArguments` are the admin bodies that
:mod:`rayfleet.platform.ingress.admin` reads; :data:`ADMIN_OPERATIONS` describes
each route of its table for :func:`admin_openapi`, which
``GET /-/openapi.json`` answers. Replies that are typed (a rollout's state, a
job's request) take their schemas from the types; the others are the
``to_dict`` shapes of the code that writes them, every key listed and no other
allowed, so a test that checks real answers against them notices a key added
or dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any, get_args

from pydantic import Field
from starlette.routing import BaseRoute

from rayfleet.platform.config.base import Spec
from rayfleet.platform.config.rollout import EventKind
from rayfleet.platform.constants import DEFAULT_VALIDATION_WINDOW_S, PACKAGE_VERSION
from rayfleet.platform.errors import (
    Conflict,
    InvalidInput,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from rayfleet.platform.ingress.openapi import (
    REF_PREFIX,
    ErrorCase,
    Operation,
    Param,
    Reply,
    openapi_document,
    typed_schemas,
)
from rayfleet.platform.rollout.history import DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT
from rayfleet.platform.rollout.machine import Phase, RolloutState
from rayfleet.platform.rollout.telemetry import CONTENT_TYPE
from rayfleet.platform.thresholds import Bound, Timing, Verdict
from rayfleet.platform.validation.jobs import Status, ValidationRequest

__all__ = [
    "ADMIN_MAX_BODY_BYTES",
    "ADMIN_OPERATIONS",
    "ROLLOUT_ACTIONS",
    "NoArguments",
    "WeightsBody",
    "admin_openapi",
]

# The largest admin body: the biggest one that means something, a validation job
# naming a dataset URI, is well under a kilobyte. Bounding it keeps a client from
# making the Validator (or the router forwarding to it) hold an arbitrary body.
ADMIN_MAX_BODY_BYTES = 64 * 1024


class WeightsBody(Spec):
    """``POST /-/rollouts/{model}/weights``: the canary's percent of traffic."""

    # Strict: a JSON number, not a string or a boolean that happens to convert.
    weight: float = Field(ge=0, le=100, allow_inf_nan=False, strict=True)


class NoArguments(Spec):
    """The body of promote, rollback, pause and resume: nothing, or ``{}``."""


# What ValidatorCore.act takes; anything else is a 404.
ROLLOUT_ACTIONS = ("promote", "rollback", "pause", "resume", "weights")


def _enum(values: Iterable[Any]) -> dict[str, Any]:
    return {"enum": [v.value if isinstance(v, Enum) else v for v in values]}


def _nullable(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"anyOf": [dict(schema), {"type": "null"}]}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF_PREFIX + name}


def _closed(
    description: str, properties: Mapping[str, Any], optional: Sequence[str] = ()
) -> dict[str, Any]:
    """An object with exactly ``properties``, all present but ``optional``."""
    return {
        "type": "object",
        "description": description,
        "properties": dict(properties),
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


_STRING: dict[str, Any] = {"type": "string"}
_NUMBER: dict[str, Any] = {"type": "number"}
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
_PERCENT: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 100}
# Version name -> the phase its rollout ended in.
_FINISHED = {"type": "object", "additionalProperties": _enum(Phase)}

_TYPED, _TYPED_DEFS = typed_schemas(
    [(RolloutState, "serialization"), (ValidationRequest, "serialization")]
)

# Named schemas the replies share; the typed ones come with their own $defs.
_COMPONENTS: dict[str, dict[str, Any]] = {
    **_TYPED_DEFS,
    # RolloutState.to_dict: the persisted state with its storage format.
    "RolloutStateDict": {
        "allOf": [
            _TYPED[(RolloutState, "serialization")],
            {
                "type": "object",
                "properties": {"format": {"type": "integer"}},
                "required": ["format"],
            },
        ],
        "description": "A rollout's state as the Validator persists it.",
    },
    # TrafficPlan.to_dict
    "TrafficPlan": _closed(
        "Each version's percent of unpinned traffic, and the shadowed version.",
        {
            "weights": {"type": "object", "additionalProperties": _PERCENT},
            "shadow": _nullable(_STRING),
            "shadow_percent": _PERCENT,
        },
    ),
    # GateResult.to_dict, as events and history entries carry gates.
    "Gate": _closed(
        "One gate's measured value against its threshold; a value that is not "
        "finite is null.",
        {
            "name": _STRING,
            "value": _nullable(_NUMBER),
            "threshold": _NUMBER,
            "bound": _enum(get_args(Bound)),
            "verdict": _enum(Verdict),
            "passed": _nullable({"type": "boolean"}),
            "detail": _STRING,
            "timing": _enum(get_args(Timing)),
        },
        optional=["timing"],
    ),
    # Event.to_dict: what webhooks post, and what an action answers.
    "Event": _closed(
        "Something that happened to a rollout.",
        {
            "kind": _enum(get_args(EventKind)),
            "model": _STRING,
            "version": {**_STRING, "description": "the canary"},
            "stable": _STRING,
            "ts": _NUMBER,
            "weight": _PERCENT,
            "phase": _enum(Phase),
            "reason": _STRING,
            "gates": {"type": "array", "items": _ref("Gate")},
        },
    ),
    # HistoryEntry.to_dict, its caller hidden to a request without the token.
    "HistoryEntry": _closed(
        "One recorded decision about a rollout.",
        {
            "format": {"type": "integer"},
            "ts": _NUMBER,
            "app": _STRING,
            "model": _STRING,
            "kind": _enum(get_args(EventKind)),
            "canary": _STRING,
            "stable": _STRING,
            "phase": _enum(Phase),
            "weight": _PERCENT,
            "reason": _STRING,
            "gates": {"type": "array", "items": _ref("Gate")},
            "caller": {
                "description": "null for the Validator's own decisions; for an "
                "operator's, who asked, or {hidden: true} without the token",
                "anyOf": [
                    {"type": "null"},
                    _closed(
                        "The address the router saw, and X-Rayfleet-Actor.",
                        {"client": _nullable(_STRING), "actor": _nullable(_STRING)},
                    ),
                    _closed("Shown only with the token.", {"hidden": {"const": True}}),
                ],
            },
        },
    ),
    # Job.to_dict
    "Job": _closed(
        "A pre-deploy validation job and, once done, its report.",
        {
            "id": _STRING,
            "request": _TYPED[(ValidationRequest, "serialization")],
            "status": _enum(get_args(Status)),
            "submitted_at": _NUMBER,
            "started_at": _nullable(_NUMBER),
            "finished_at": _nullable(_NUMBER),
            "progress": _closed(
                "Rows of the dataset done so far.",
                {"rows_done": _COUNT, "rows_total": _COUNT},
            ),
            "report": {
                "description": "the offline report, as `rayfleet validate "
                "--json` writes it; null until the job is done",
                "type": ["object", "null"],
            },
            "error": _nullable(_STRING),
        },
    ),
    # build_snapshot: its keys down to each model's; a version's window, series
    # and replicas and the live comparison are left open, as the dashboard's.
    "Snapshot": _closed(
        "Each model's plan, versions, rollout and comparison over the window, "
        "and the recent events.",
        {
            "app": _STRING,
            "now": _NUMBER,
            "window_s": _NUMBER,
            "models": {
                "type": "array",
                "items": _closed(
                    "One model.",
                    {
                        "name": _STRING,
                        "stable": _STRING,
                        "plan": _ref("TrafficPlan"),
                        "versions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "description": "a version's window summary, "
                                "time series, totals and replicas",
                            },
                        },
                        "rollout": _nullable(_TYPED[(RolloutState, "serialization")]),
                        "comparison": {
                            "description": "canary against stable over the "
                            "rollout's step; null without a rollout",
                            "type": ["object", "null"],
                        },
                        "finished": _FINISHED,
                    },
                ),
            },
            "events": {"type": "array", "items": _ref("Event")},
            "observations": _closed(
                "Observations the Validator took in, and routers dropped.",
                {"ingested": _COUNT, "dropped": _COUNT},
            ),
            "sketches": {
                "type": "object",
                "description": "with sketches=true only: per model and version, "
                "the window's latency sketches, {e2e, model}",
            },
        },
        optional=["sketches"],
    ),
}

_MODEL = Param("model", "a model of the spec")
_NO_MODEL = ErrorCase(ModelNotFound, "no model of that name")
_BODY = ErrorCase(InvalidInput, "a body that does not fit the model, field by field")
_TOO_LARGE = ErrorCase(
    PayloadTooLarge, f"a body over {ADMIN_MAX_BODY_BYTES // 1024} KiB"
)


def _json(description: str, schema: Mapping[str, Any], status: int = 200) -> Reply:
    return Reply(description, schema, status=status)


ADMIN_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/metrics"): Operation(
        "Prometheus metrics of the application",
        Reply("Prometheus text format", _STRING, media_type=CONTENT_TYPE),
    ),
    ("GET", "/-/validation"): Operation(
        "Statistics, plans and rollouts over a window",
        _json("the snapshot the dashboard reads", _ref("Snapshot")),
        query=(
            Param(
                "window_s",
                "the window in seconds, at most the spec's observations.horizon_s",
                {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "default": DEFAULT_VALIDATION_WINDOW_S,
                },
            ),
            Param(
                "sketches",
                "add each version's latency sketches of the window",
                {"type": "boolean", "default": False},
            ),
        ),
        errors=(ErrorCase(InvalidInput, "a window or flag out of range"),),
    ),
    ("GET", "/-/dashboard"): Operation(
        "The dashboard page",
        Reply("a self-contained HTML page", _STRING, media_type="text/html"),
    ),
    ("GET", "/-/openapi.json"): Operation(
        "This document",
        _json("the OpenAPI 3.1 document of these routes", {"type": "object"}),
    ),
    ("GET", "/-/rollouts"): Operation(
        "Each model's stable version, traffic plan and rollout",
        _json(
            "by model name",
            {
                "type": "object",
                "additionalProperties": _closed(
                    "One model's rollout.",
                    {
                        "stable": _STRING,
                        "plan": _ref("TrafficPlan"),
                        "rollout": _nullable(_ref("RolloutStateDict")),
                        "finished": _FINISHED,
                    },
                ),
            },
        ),
    ),
    ("GET", "/-/rollouts/{model}/history"): Operation(
        "A model's recorded rollout decisions, oldest first",
        _json(
            "the last `limit` entries",
            {"type": "array", "items": _ref("HistoryEntry")},
        ),
        path=(_MODEL,),
        query=(
            Param(
                "limit",
                "how many of the latest entries",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_HISTORY_LIMIT,
                    "default": DEFAULT_HISTORY_LIMIT,
                },
            ),
        ),
        errors=(
            ErrorCase(InvalidInput, "a limit out of range"),
            _NO_MODEL,
            ErrorCase(ServiceUnavailable, "the store cannot be read"),
        ),
        token="optional",
    ),
    ("POST", "/-/rollouts/{model}/{action}"): Operation(
        "Steer a rollout: weights takes a WeightsBody, the others NoArguments",
        _json(
            "the rollout after the action, and the events it caused",
            _closed(
                "The action's outcome.",
                {
                    "rollout": _ref("RolloutStateDict"),
                    "events": {"type": "array", "items": _ref("Event")},
                },
            ),
        ),
        bodies=(WeightsBody, NoArguments),
        path=(_MODEL, Param("action", "what to do", _enum(ROLLOUT_ACTIONS))),
        errors=(
            _BODY,
            ErrorCase(ModelNotFound, "no such model, rollout or action"),
            ErrorCase(Conflict, "the rollout's phase refuses the action"),
            _TOO_LARGE,
        ),
        token="required",
    ),
    ("POST", "/-/validations"): Operation(
        "Queue a pre-deploy validation job",
        _json("the queued job", _ref("Job"), status=202),
        bodies=(ValidationRequest,),
        errors=(
            _BODY,
            ErrorCase(InvalidInput, "a name that is not one folder of the store"),
            ErrorCase(NotFound, "a version the store lacks"),
            _TOO_LARGE,
        ),
        token="required",
    ),
    ("GET", "/-/validations"): Operation(
        "The validation jobs remembered, in submission order",
        _json("the jobs", {"type": "array", "items": _ref("Job")}),
    ),
    ("GET", "/-/validations/{job}"): Operation(
        "One validation job",
        _json("the job", _ref("Job")),
        path=(Param("job", "the id the job was queued under"),),
        errors=(ErrorCase(NotFound, "no such job, or one forgotten"),),
    ),
}

# Clients reach these routes through a router, which answers for a Validator
# that does not.
_THROUGH_A_ROUTER = (
    ErrorCase(ServiceUnavailable, "the router could not reach the Validator"),
)


def admin_openapi(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of the Validator's ``routes``; raises
    :class:`~rayfleet.platform.ingress.openapi.RouteTableMismatch` for a route
    :data:`ADMIN_OPERATIONS` does not describe, or the reverse."""
    return openapi_document(
        routes,
        ADMIN_OPERATIONS,
        info={
            "title": "rayfleet Validator",
            "version": PACKAGE_VERSION,
            "description": "Rollouts, validation and metrics. Reached through "
            "a router, at the same paths.",
        },
        components=_COMPONENTS,
        everywhere=_THROUGH_A_ROUTER,
    )
