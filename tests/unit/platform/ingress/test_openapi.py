"""``GET /-/openapi.json``: a valid OpenAPI 3.1 document of the Validator's routes,
generated from the route table and the body models, whose schemas the real
answers meet."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.errors import InvalidInput, NotFound
from rayfleet.platform.ingress.admin import forwarding_routes
from rayfleet.platform.ingress.admin_api import (
    ADMIN_MAX_BODY_BYTES,
    ADMIN_OPERATIONS,
    ROLLOUT_ACTIONS,
    NoArguments,
    WeightsBody,
    admin_openapi,
)
from rayfleet.platform.ingress.asgi import ForwardedResponse, Headers, call_asgi
from rayfleet.platform.ingress.openapi import (
    REF_PREFIX,
    ErrorCase,
    Operation,
    Param,
    Reply,
    RouteTableMismatch,
    openapi_document,
)
from rayfleet.platform.rollout import machine as ro
from rayfleet.platform.rollout.history import Caller, HistoryEntry
from rayfleet.platform.thresholds import GateResult, Verdict
from rayfleet.platform.validation.jobs import ValidationRequest
from tests.unit.platform.ingress.test_admin import TOKEN, Admin, bearer

REF_TEMPLATE = REF_PREFIX + "{model}"
INFO = {"title": "t", "version": "1"}


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/-/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def schema_of(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of ``schema``, its references resolved in ``document``."""
    return Draft202012Validator({**schema, "components": document["components"]})


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    name = schema["$ref"].removeprefix(REF_PREFIX)
    resolved: dict[str, Any] = document["components"]["schemas"][name]
    return resolved


def operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][path][method.lower()]
    return found


# -- the document -------------------------------------------------------------


def test_the_document_validates_as_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(document).validate()


def test_the_document_needs_no_token(admin: Admin, store: ModelStore) -> None:
    # Not even a configured one: the document describes routes, it holds no secret.
    with TestClient(Admin(store, None).app) as client:
        assert client.get("/-/openapi.json").json() == admin_openapi(admin.app.routes)


def test_every_route_of_the_table_is_in_the_document(
    admin: Admin, document: dict[str, Any]
) -> None:
    in_table = {
        (method, route.path)
        for route in admin.app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    in_document = {
        (method.upper(), path)
        for path, methods in document["paths"].items()
        for method in methods
    }
    assert in_document == in_table == set(ADMIN_OPERATIONS)
    assert len(in_table) == 10


def test_a_route_without_a_description_fails() -> None:
    async def handler(request: Any) -> Any:
        raise AssertionError("never called")

    described = {("GET", "/a"): Operation("a", Reply("a", {"type": "object"}))}
    routes = [Route("/a", handler, methods=["GET"])]
    assert set(openapi_document(routes, described, info=INFO)["paths"]) == {"/a"}
    with pytest.raises(RouteTableMismatch, match="POST /a has no description"):
        openapi_document(
            [Route("/a", handler, methods=["GET", "POST"])], described, info=INFO
        )
    with pytest.raises(RouteTableMismatch, match=r"descriptions of no route.*'/b'"):
        openapi_document(
            routes,
            {**described, ("GET", "/b"): described[("GET", "/a")]},
            info=INFO,
        )
    with pytest.raises(RouteTableMismatch, match=r"path parameters \['x'\]"):
        openapi_document(
            [Route("/a/{x}", handler, methods=["GET"])],
            {("GET", "/a/{x}"): described[("GET", "/a")]},
            info=INFO,
        )
    with pytest.raises(RouteTableMismatch, match="two different schemas named 'Error'"):
        openapi_document(
            routes,
            described,
            info=INFO,
            components={"Error": {"type": "string"}},
        )


def test_the_build_of_the_app_fails_on_a_route_without_a_description(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    described = dict(ADMIN_OPERATIONS)
    del described[("GET", "/-/dashboard")]
    monkeypatch.setattr(
        "rayfleet.platform.ingress.admin_api.ADMIN_OPERATIONS", described
    )
    with pytest.raises(RouteTableMismatch, match="GET /-/dashboard has no desc"):
        Admin(store, TOKEN)


def test_parameters_are_the_handlers(document: dict[str, Any]) -> None:
    def parameters(method: str, path: str) -> dict[str, tuple[str, bool, Any]]:
        return {
            p["name"]: (p["in"], p["required"], p["schema"])
            for p in operation(document, method, path)["parameters"]
        }

    assert parameters("GET", "/-/validation") == {
        "window_s": (
            "query",
            False,
            {"type": "number", "exclusiveMinimum": 0, "default": 300.0},
        ),
        "sketches": ("query", False, {"type": "boolean", "default": False}),
    }
    assert parameters("GET", "/-/rollouts/{model}/history") == {
        "model": ("path", True, {"type": "string"}),
        "limit": (
            "query",
            False,
            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        ),
    }
    assert parameters("POST", "/-/rollouts/{model}/{action}") == {
        "model": ("path", True, {"type": "string"}),
        "action": ("path", True, {"enum": list(ROLLOUT_ACTIONS)}),
    }
    assert parameters("GET", "/-/validations/{job}") == {
        "job": ("path", True, {"type": "string"})
    }
    assert parameters("GET", "/-/rollouts") == {}


@pytest.mark.parametrize(
    ("method", "path", "models", "required"),
    [
        ("POST", "/-/rollouts/{model}/{action}", [WeightsBody, NoArguments], False),
        ("POST", "/-/validations", [ValidationRequest], True),
    ],
)
def test_request_bodies_are_the_models_schemas(
    document: dict[str, Any],
    method: str,
    path: str,
    models: list[type[BaseModel]],
    required: bool,
) -> None:
    body = operation(document, method, path)["requestBody"]
    assert body["required"] is required
    schema = body["content"]["application/json"]["schema"]
    refs = schema["anyOf"] if len(models) > 1 else [schema]
    for ref, model in zip(refs, models, strict=True):
        expected = model.model_json_schema(ref_template=REF_TEMPLATE)
        for name, nested in expected.pop("$defs", {}).items():
            assert document["components"]["schemas"][name] == nested
        assert resolve(document, ref) == expected


def test_only_the_bodies_of_the_table_are_documented(document: dict[str, Any]) -> None:
    with_bodies = {
        (method.upper(), path)
        for path, methods in document["paths"].items()
        for method, described in methods.items()
        if "requestBody" in described
    }
    assert with_bodies == {
        ("POST", "/-/rollouts/{model}/{action}"),
        ("POST", "/-/validations"),
    }


def test_admin_routes_carry_the_bearer_requirement(
    client: TestClient, document: dict[str, Any]
) -> None:
    scheme = {"type": "http", "scheme": "bearer"}
    assert document["components"]["securitySchemes"] == {"bearerToken": scheme}
    security = {
        (method.upper(), path): described.get("security")
        for path, methods in document["paths"].items()
        for method, described in methods.items()
    }
    required: list[dict[str, list[str]]] = [{"bearerToken": []}]
    assert {key for key, value in security.items() if value == required} == {
        ("POST", "/-/rollouts/{model}/{action}"),
        ("POST", "/-/validations"),
    }
    # Open to anyone; callers shown only with the token.
    assert security[("GET", "/-/rollouts/{model}/history")] == [
        {},
        {"bearerToken": []},
    ]
    assert sum(value is None for value in security.values()) == 7
    for method, path in (k for k, v in security.items() if v == required):
        assert "401" in operation(document, method, path)["responses"]
        concrete = path.replace("{model}", "digits").replace("{action}", "pause")
        refused = client.request(method, concrete, json={})
        assert refused.status_code == 401


# -- the answers meet the document -------------------------------------------


def check_reply(
    document: dict[str, Any], method: str, path: str, response: Any
) -> None:
    """``response`` is one the document lists for the route, in its schema."""
    responses = operation(document, method, path)["responses"]
    assert str(response.status_code) in responses, (path, response.text)
    content = responses[str(response.status_code)]["content"]
    media_type = response.headers["content-type"].split(";")[0]
    (described,) = (v for k, v in content.items() if k.split(";")[0] == media_type)
    body = response.json() if media_type == "application/json" else response.text
    errors = [
        error.message
        for error in schema_of(document, described["schema"]).iter_errors(body)
    ]
    assert errors == [], (path, errors)


def test_answers_meet_their_schemas(
    client: TestClient, admin: Admin, document: dict[str, Any]
) -> None:
    act = "/-/rollouts/{model}/{action}"
    history = "/-/rollouts/{model}/history"
    calls: list[tuple[str, str, str, dict[str, Any]]] = [
        ("GET", "/metrics", "/metrics", {}),
        ("GET", "/-/dashboard", "/-/dashboard", {}),
        ("GET", "/-/openapi.json", "/-/openapi.json", {}),
        ("GET", "/-/rollouts", "/-/rollouts", {}),
        ("GET", "/-/validation", "/-/validation", {}),
        ("GET", "/-/validation", "/-/validation?window_s=60&sketches=true", {}),
        ("GET", "/-/validation", "/-/validation?window_s=0", {}),
        ("GET", "/-/validation", "/-/validation?sketches=yes", {}),
        ("POST", act, "/-/rollouts/digits/pause", {"headers": bearer(TOKEN)}),
        ("POST", act, "/-/rollouts/digits/pause", {"headers": bearer(TOKEN)}),
        (
            "POST",
            act,
            "/-/rollouts/digits/weights",
            {"headers": bearer(TOKEN), "json": {"weight": 40}},
        ),
        (
            "POST",
            act,
            "/-/rollouts/digits/weights",
            {"headers": bearer(TOKEN), "json": {"weight": "40"}},
        ),
        ("POST", act, "/-/rollouts/fraud/resume", {"headers": bearer(TOKEN)}),
        ("POST", act, "/-/rollouts/digits/resume", {}),
        (
            "POST",
            act,
            "/-/rollouts/digits/resume",
            {
                "headers": bearer(TOKEN),
                "content": b"x" * (ADMIN_MAX_BODY_BYTES + 1),
            },
        ),
        ("GET", "/-/rollouts", "/-/rollouts", {}),
        ("GET", history, "/-/rollouts/digits/history", {}),
        ("GET", history, "/-/rollouts/digits/history", {"headers": bearer(TOKEN)}),
        ("GET", history, "/-/rollouts/digits/history?limit=0", {}),
        ("GET", history, "/-/rollouts/fraud/history", {}),
        (
            "POST",
            "/-/validations",
            "/-/validations",
            {
                "headers": bearer(TOKEN),
                "json": {"model": "digits", "candidate": "v2", "baseline": "v1"},
            },
        ),
        (
            "POST",
            "/-/validations",
            "/-/validations",
            {
                "headers": bearer(TOKEN),
                "json": {"model": "digits", "candidate": "v9", "baseline": "v1"},
            },
        ),
        ("POST", "/-/validations", "/-/validations", {"headers": bearer(TOKEN)}),
        ("GET", "/-/validations", "/-/validations", {}),
        ("GET", "/-/validations/{job}", "/-/validations/nope", {}),
    ]
    statuses = []
    for method, path, url, options in calls:
        response = client.request(method, url, **options)
        statuses.append(response.status_code)
        check_reply(document, method, path, response)
    assert statuses == [
        200, 200, 200, 200, 200, 200, 400, 400,
        200, 409, 200, 400, 404, 401, 413,
        200, 200, 200, 400, 404,
        202, 404, 400, 200, 404,
    ]  # fmt: skip
    (job,) = admin.jobs.jobs
    found = client.get(f"/-/validations/{job}")
    check_reply(document, "GET", "/-/validations/{job}", found)
    assert found.json()["request"]["batch_size"] == 64


def test_a_finished_job_meets_its_schema(
    client: TestClient, admin: Admin, document: dict[str, Any]
) -> None:
    request = ValidationRequest(model="digits", candidate="v2", baseline="v1")
    job = admin.jobs.submit(request)
    job.status, job.finished_at, job.rows_done, job.rows_total = "passed", 1.0, 3, 3
    job.started_at, job.report = 0.5, {"passed": True, "gates": []}
    check_reply(
        document,
        "GET",
        "/-/validations/{job}",
        client.get(f"/-/validations/{job.id}"),
    )


def test_gates_meet_their_schemas_as_events_and_entries_carry_them(
    admin: Admin, document: dict[str, Any]
) -> None:
    timed = GateResult("e2e_p99_ms", 250.0, 200.0, "max", Verdict.FAIL, "", "model")
    gates = (
        timed,
        GateResult("agreement", None, 0.9, "min", Verdict.PENDING, "no pairs yet"),
        GateResult("prediction_js", 0.01, 0.1, "max", Verdict.PASS),
    )
    event = ro.Event(
        kind="rolled_back",
        model="digits",
        version="v2",
        stable="v1",
        ts=1.0,
        weight=10.0,
        phase=ro.Phase.ROLLED_BACK,
        reason="gates failed",
        gates=gates,
    )
    state = replace(admin.core.rollouts["digits"], gates=gates)
    # Events and entries write a value that is not finite as null.
    unbounded = replace(event, gates=(replace(timed, value=math.inf), *gates))
    entry = HistoryEntry.of("app", unbounded, Caller("10.0.0.1", "alice"))
    shown = {
        "Event": unbounded.to_dict(),
        "HistoryEntry": entry.to_dict(),
        "RolloutStateDict": state.to_dict(),
    }
    for name, value in shown.items():
        # As a JSONResponse writes it.
        body = json.loads(JSONResponse(value).body)
        validator = schema_of(document, {"$ref": REF_PREFIX + name})
        assert [error.message for error in validator.iter_errors(body)] == [], name


def test_every_documented_action_is_one_the_core_takes(client: TestClient) -> None:
    for action in ROLLOUT_ACTIONS:
        body = {"weight": 30} if action == "weights" else {}
        response = client.post(
            f"/-/rollouts/digits/{action}", headers=bearer(TOKEN), json=body
        )
        assert response.status_code in (200, 409), (action, response.text)


def test_errors_are_grouped_by_their_status(document: dict[str, Any]) -> None:
    responses = operation(document, "POST", "/-/validations")["responses"]
    assert sorted(responses) == ["202", "400", "401", "404", "413", "500", "503"]
    assert responses["400"]["description"] == (
        "InvalidInput: a body that does not fit the model, field by field; "
        "InvalidInput: a name that is not one folder of the store"
    )
    assert responses["503"]["headers"]["Retry-After"]["schema"] == {
        "type": "integer",
        "minimum": 0,
    }
    assert "headers" not in responses["404"]
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["additionalProperties"] is False


def test_error_cases_take_their_status_from_the_error_table() -> None:
    async def handler(request: Any) -> Any:
        raise AssertionError("never called")

    described = Operation(
        "a",
        Reply("a", {"type": "object"}),
        errors=(ErrorCase(NotFound, "x"), ErrorCase(InvalidInput, "y")),
        query=(Param("q", "a query"),),
    )
    document = openapi_document(
        [Route("/a", handler, methods=["GET"])], {("GET", "/a"): described}, info=INFO
    )
    responses = document["paths"]["/a"]["get"]["responses"]
    assert {status: r["description"] for status, r in responses.items()} == {
        "200": "a",
        "400": "InvalidInput: y",
        "404": "NotFound: x",
        "500": 'an unexpected error (a bug): logged, and answered "internal error"',
    }


def test_the_router_forwards_the_document(admin: Admin) -> None:
    async def call(
        method: str, path: str, query: bytes, headers: Headers, body: bytes
    ) -> ForwardedResponse:
        return await call_asgi(admin.app, method, path, query, headers, body)

    router = Starlette(routes=forwarding_routes(call, 1.0))
    with TestClient(router) as client:
        response = client.get("/-/openapi.json")
    assert response.status_code == 200
    assert response.json() == admin_openapi(admin.app.routes)


# -- bodies: the schema and the models agree ----------------------------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


# Values near the edges of each field's rule, so that bodies on both sides of it
# come up, and not only ones that miss it.
_NAME = st.text(min_size=1, max_size=2) | st.sampled_from(["", "v1"])
_NEAR = {
    "weight": st.floats(-1, 101) | st.integers(-1, 101),
    "model": _NAME,
    "candidate": _NAME,
    "baseline": _NAME,
    "data": st.none() | _NAME,
    "batch_size": st.integers(-1, 4),
}


@st.composite
def _bodies(draw: st.DrawFn, model: type[BaseModel]) -> Any:
    """Mostly an object with most of the model's keys (now and then an odd one),
    most values near their rule and the others any JSON; now and then no object
    at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(_JSON)
    body = {}
    for key in model.model_fields:
        if draw(st.integers(0, 7)) == 0:
            continue
        near = key in _NEAR and draw(st.integers(0, 7)) > 0
        body[key] = draw(_NEAR[key] if near else _JSON)
    if draw(st.integers(0, 7)) == 0:
        body[draw(st.text(max_size=5))] = draw(_JSON)
    return body


def _reads(model: type[BaseModel], body: Any) -> bool:
    try:
        model.model_validate_json(json.dumps(body))
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("model", [WeightsBody, NoArguments, ValidationRequest])
def test_a_body_the_schema_accepts_the_model_reads(
    document: dict[str, Any], model: type[BaseModel]
) -> None:
    validator = schema_of(document, {"$ref": REF_PREFIX + model.__name__})

    # No timing checks: the machines these run on are shared and noisy.
    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_bodies(model))
    def check(body: Any) -> None:
        reads = _reads(model, body)
        if validator.is_valid(body):
            assert reads, body
        elif model is not ValidationRequest:
            # The admin bodies are strict, so the schema is their whole rule.
            # ValidationRequest is lax: it also reads "64" as 64.
            assert not reads, body

    check()
