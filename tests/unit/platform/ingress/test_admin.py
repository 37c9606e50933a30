"""The Validator's pages and the router's forwarding routes, without Ray.

The admin app runs over a real :class:`ValidatorCore` and a store on disk; the
forwarding routes reach it through :func:`call_asgi`, as the router reaches the
Validator through its deployment handle, or through a stand-in that fails.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.testclient import TestClient

from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.errors import InvalidInput, ServiceUnavailable, StoreError
from rayfleet.platform.ingress.admin import (
    ADMIN_MAX_BODY_BYTES,
    ValidatorCall,
    build_admin_app,
    forwarding_routes,
)
from rayfleet.platform.ingress.asgi import ForwardedResponse, Headers, call_asgi
from rayfleet.platform.rollout import machine as ro
from rayfleet.platform.rollout.controller import ValidatorCore
from rayfleet.platform.rollout.history import CALLER_MAX_CHARS
from rayfleet.platform.rollout.state_store import MemoryStateStore
from rayfleet.platform.validation.jobs import JobQueue
from rayfleet.platform.validation.observation import Observation
from rayfleet.platform.validation.sketch import LatencySketch
from tests.fuzz_strategies import HttpCase, admin_requests, fuzz_settings, send
from tests.observations import ingest_rows

TOKEN = "s3cret-token"


class Admin:
    """The admin app over a fresh core, and what it handed to the webhooks."""

    def __init__(
        self,
        store: ModelStore,
        token: str | None,
        state: MemoryStateStore | None = None,
    ) -> None:
        spec = parse_spec(
            {
                "store": store.uri,
                "observations": {"horizon_s": 600},
                "models": [
                    {
                        "name": "digits",
                        "versions": [{"name": "v1"}, {"name": "v2", "canary": True}],
                        "rollout": {"steps": [10, 100]},
                    }
                ],
            }
        )
        # The app reads the wall clock, as the Validator does.
        self.state = state or MemoryStateStore()
        self.core = ValidatorCore(spec, "app", self.state, {}, now=time.time())
        self.jobs = JobQueue()
        self.sent: list[ro.Event] = []
        self.app = build_admin_app(
            self.core,
            store,
            self.jobs,
            admin_token=token,
            send_events=self.sent.extend,
            dashboard_html=lambda: "<html>dashboard</html>",
        )


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# -- the Validator's app ----------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong"),
        {"authorization": TOKEN},
        {"authorization": f"Basic {TOKEN}"},
    ],
)
def test_admin_routes_refuse_a_missing_or_wrong_token(
    client: TestClient, admin: Admin, headers: dict[str, str]
) -> None:
    response = client.post("/-/rollouts/digits/pause", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "missing or wrong bearer token"}
    submitted = client.post("/-/validations", headers=headers, json={})
    assert submitted.status_code == 401
    assert admin.sent == [] and not admin.jobs.jobs


def test_admin_routes_are_off_without_a_token(store: ModelStore) -> None:
    with TestClient(Admin(store, None).app) as client:
        response = client.post("/-/rollouts/digits/pause", headers=bearer(TOKEN))
    assert response.status_code == 401
    assert (
        "set RAYFLEET_ADMIN_TOKEN where the Validator runs" in response.json()["error"]
    )


def test_the_right_token_steers_a_rollout(client: TestClient, admin: Admin) -> None:
    paused = client.post("/-/rollouts/digits/pause", headers=bearer(TOKEN))
    assert paused.status_code == 200
    assert paused.json()["rollout"]["phase"] == "paused"
    assert [event.to_dict() for event in admin.sent] == paused.json()["events"]
    again = client.post("/-/rollouts/digits/pause", headers=bearer(TOKEN))
    assert again.status_code == 409
    unknown = client.post("/-/rollouts/digits/explode", headers=bearer(TOKEN))
    assert unknown.status_code == 404
    no_weight = client.post("/-/rollouts/digits/weights", headers=bearer(TOKEN))
    assert no_weight.status_code == 400
    assert no_weight.json() == {
        "error": 'expected a JSON body like {"weight": 25}: weight: Field required'
    }
    weighted = client.post(
        "/-/rollouts/digits/weights", headers=bearer(TOKEN), json={"weight": 50}
    )
    assert weighted.status_code == 200
    assert weighted.json()["rollout"]["weight"] == 50


# (body, field path in the error): every body a typed model refuses is a 400.
BAD_WEIGHTS = [
    (b'{"weight": -1}', "weight: Input should be greater than or equal to 0"),
    (b'{"weight": 101}', "weight: Input should be less than or equal to 100"),
    (b'{"weight": 1e308}', "weight: Input should be less than or equal to 100"),
    (b'{"weight": 1e999}', "weight: Input should be a finite number"),
    (b'{"weight": NaN}', "weight: Input should be a finite number"),
    (b'{"weight": "25"}', "weight: Input should be a valid number"),
    (b'{"weight": true}', "weight: Input should be a valid number"),
    (b'{"weight": [25]}', "weight: Input should be a valid number"),
    (b'{"weight": 25, "step": 1}', "step: Extra inputs are not permitted"),
    (b'{"weight": ' + b"[" * 5000 + b"]" * 5000 + b"}", "body: Invalid JSON"),
    (b"[" * 50_000, "body: Invalid JSON"),
    (b"[25]", "body: Input should be an object"),
    (b"25", "body: Input should be an object"),
    (b"null", "body: Input should be an object"),
    (b'{"weight": 25', "body: Invalid JSON"),
    (b"\xff\xfe", "body: Invalid JSON"),
]


@pytest.mark.parametrize(("body", "problem"), BAD_WEIGHTS)
def test_a_weights_body_is_checked_field_by_field(
    client: TestClient, admin: Admin, body: bytes, problem: str
) -> None:
    response = client.post(
        "/-/rollouts/digits/weights", headers=bearer(TOKEN), content=body
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith('expected a JSON body like {"weight": 25}: ')
    assert problem in error
    assert admin.sent == []
    assert admin.core.rollouts["digits"].weight == 0


@pytest.mark.parametrize("action", ["promote", "rollback", "pause", "resume"])
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"weight": 5}', "weight: Extra inputs are not permitted"),
        (b"[]", "body: Input should be an object"),
        (b"{", "body: Invalid JSON"),
    ],
)
def test_the_other_actions_take_no_arguments(
    client: TestClient, admin: Admin, action: str, body: bytes, problem: str
) -> None:
    response = client.post(
        f"/-/rollouts/digits/{action}", headers=bearer(TOKEN), content=body
    )
    assert response.status_code == 400
    assert problem in response.json()["error"]
    assert admin.sent == []


@pytest.mark.parametrize("body", [b"", b"  ", b"{}"])
def test_an_empty_body_or_object_is_no_arguments(
    client: TestClient, body: bytes
) -> None:
    response = client.post(
        "/-/rollouts/digits/pause", headers=bearer(TOKEN), content=body
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "model: Field required"),
        (b'{"model": "digits"}', "candidate: Field required"),
        (
            b'{"model": "digits", "candidate": "v2", "baseline": "v1", '
            b'"batch_size": -3}',
            "batch_size: Input should be greater than 0",
        ),
        (
            b'{"model": "digits", "candidate": "v2", "baseline": "v1", "x": 1}',
            "x: Extra inputs are not permitted",
        ),
        (b'{"model": ["digits"]}', "model: Input should be a valid string"),
        (b"[" * 50_000, "body: Invalid JSON"),
        (b'"digits"', "body: Input should be an object"),
        (
            b'{"model": "../../etc", "candidate": "v2", "baseline": "v1"}',
            "model: '../../etc' is not a model or version name",
        ),
        (
            b'{"model": "digits", "candidate": "v2\\u0000", "baseline": "v1"}',
            "candidate: 'v2\\x00' is not a model or version name",
        ),
        (
            b'{"model": "digits", "candidate": "v2", "baseline": ".."}',
            "baseline: '..' is not a model or version name",
        ),
    ],
)
def test_a_validation_job_body_is_checked_field_by_field(
    client: TestClient, admin: Admin, body: bytes, problem: str
) -> None:
    response = client.post("/-/validations", headers=bearer(TOKEN), content=body)
    assert response.status_code == 400
    assert problem in response.json()["error"]
    assert not admin.jobs.jobs


@pytest.mark.parametrize(
    "path", ["/-/rollouts/digits/weights", "/-/rollouts/digits/pause", "/-/validations"]
)
def test_a_huge_admin_body_is_a_413(client: TestClient, path: str) -> None:
    body = b'{"weight": 5, "pad": "' + b"x" * (ADMIN_MAX_BODY_BYTES + 1) + b'"}'
    response = client.post(path, headers=bearer(TOKEN), content=body)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_the_core_refuses_a_weight_outside_a_percent(admin: Admin) -> None:
    for weight in (-1.0, 101.0, float("nan"), float("inf")):
        with pytest.raises(InvalidInput, match="weight must be a percent"):
            admin.core.act("digits", "weights", time.time(), weight)


def _still_answers(client: TestClient) -> None:
    rollouts = client.get("/-/rollouts")
    assert rollouts.status_code == 200
    assert set(rollouts.json()) == {"digits"}
    assert client.get("/metrics").status_code == 200


@fuzz_settings(60)
@given(case=admin_requests(TOKEN))
def test_fuzz_admin_with_the_token(store: ModelStore, case: HttpCase) -> None:
    """Whatever an operator sends, the answer is below 500 and JSON when 4xx."""
    with TestClient(Admin(store, TOKEN).app) as client:
        send(client, case)
        _still_answers(client)
        paused = client.post("/-/rollouts/digits/pause", headers=bearer(TOKEN))
        assert paused.status_code in (200, 409)


@fuzz_settings(40)
@given(case=admin_requests(None))
def test_fuzz_admin_without_the_token(store: ModelStore, case: HttpCase) -> None:
    """Without the token nothing changes, whatever the body."""
    admin = Admin(store, TOKEN)
    with TestClient(admin.app) as client:
        send(client, case)
        _still_answers(client)
    assert admin.sent == [] and not admin.jobs.jobs


def test_read_only_pages(client: TestClient) -> None:
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert client.get("/-/dashboard").text == "<html>dashboard</html>"
    rollouts = client.get("/-/rollouts").json()
    assert rollouts["digits"]["stable"] == "v1"
    assert rollouts["digits"]["rollout"]["canary_version"] == "v2"
    assert client.get("/-/validation").status_code == 200
    assert client.get("/-/validation?window_s=600").status_code == 200


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("soon", "window_s must be a number of seconds: 'soon'"),
        ("0", "window_s must lie in (0, 600]: 0"),
        ("601", "window_s must lie in (0, 600]: 601"),
    ],
)
def test_validation_window_is_checked(
    client: TestClient, window: str, message: str
) -> None:
    response = client.get("/-/validation", params={"window_s": window})
    assert response.status_code == 400
    assert response.json() == {"error": message}


def test_validation_shows_latency_sketches_only_when_asked(
    client: TestClient, admin: Admin
) -> None:
    now = time.time()
    rows = [
        Observation("digits", "v1", now, 10.0 + i, 1.0 + i / 10, 200).to_row()
        for i in range(50)
    ]
    # An error is counted but not timed, as in the window's own summary.
    rows.append(Observation("digits", "v1", now, 1.0, 0.5, 500).to_row())
    ingest_rows(admin.core, rows)
    plain = client.get("/-/validation", params={"window_s": 60}).json()
    assert "sketches" not in plain
    assert client.get("/-/validation?sketches=false").json().keys() == plain.keys()
    body = client.get("/-/validation?window_s=60&sketches=true").json()
    windows = [[v["window"] for v in m["versions"]] for m in plain["models"]]
    assert [[v["window"] for v in m["versions"]] for m in body["models"]] == windows
    assert sorted(body["sketches"]["digits"]) == ["v1", "v2"]
    v1 = body["sketches"]["digits"]["v1"]
    assert (v1["e2e"]["min"], v1["e2e"]["max"]) == (10.0, 59.0)
    assert (v1["model"]["min"], v1["model"]["max"]) == (1.0, 1.0 + 49 / 10)
    e2e, model = (LatencySketch.from_dict(v1[k]) for k in ("e2e", "model"))
    summary = plain["models"][0]["versions"][0]["window"]
    assert (e2e.count, model.count) == (50, 50)
    assert (e2e.quantile(0.5), e2e.quantile(0.99)) == (
        summary["p50_ms"],
        summary["p99_ms"],
    )
    assert model.quantile(0.99) == summary["model_p99_ms"]
    empty = body["sketches"]["digits"]["v2"]["model"]
    assert LatencySketch.from_dict(empty).count == 0


@pytest.mark.parametrize("value", ["", "1", "yes", "True", "TRUE", "x" * 100])
def test_validation_sketches_flag_is_checked(client: TestClient, value: str) -> None:
    response = client.get("/-/validation", params={"sketches": value})
    assert response.status_code == 400
    assert response.json() == {
        "error": f"sketches must be true or false: {value[:32]!r}"
    }


def test_validation_jobs(client: TestClient, admin: Admin) -> None:
    body = {"model": "digits", "candidate": "v2", "baseline": "v1"}
    submitted = client.post("/-/validations", headers=bearer(TOKEN), json=body)
    assert submitted.status_code == 202
    job = submitted.json()
    assert job["status"] == "queued"
    assert client.get(f"/-/validations/{job['id']}").json() == job
    assert client.get("/-/validations").json() == [job]
    assert admin.jobs.pending.qsize() == 1
    missing = client.post(
        "/-/validations", headers=bearer(TOKEN), json={**body, "candidate": "v9"}
    )
    assert missing.status_code == 404
    assert "no version 'v9'" in missing.json()["error"]
    malformed = client.post(
        "/-/validations", headers=bearer(TOKEN), json={"model": "digits"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"].startswith("expected a JSON body like")
    assert "candidate: Field required" in malformed.json()["error"]
    assert client.get("/-/validations/nope").status_code == 404


def test_history_needs_no_token_and_shows_callers_only_with_it(
    client: TestClient, admin: Admin
) -> None:
    paused = client.post(
        "/-/rollouts/digits/pause",
        headers={**bearer(TOKEN), "x-rayfleet-actor": "alice@laptop"},
    )
    assert paused.status_code == 200
    open_view = client.get("/-/rollouts/digits/history")
    assert open_view.status_code == 200
    assert [(e["kind"], e["caller"]) for e in open_view.json()] == [
        ("rollout_started", None),
        ("paused", {"hidden": True}),
    ]
    assert "alice" not in open_view.text
    for headers in ({"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        wrong = client.get("/-/rollouts/digits/history", headers=headers)
        assert wrong.json() == open_view.json()
    admin_view = client.get("/-/rollouts/digits/history", headers=bearer(TOKEN))
    started, pause = admin_view.json()
    assert pause["caller"] == {"client": "testclient", "actor": "alice@laptop"}
    assert pause["reason"] == "operator: pause"
    assert (pause["canary"], pause["stable"], pause["weight"]) == ("v2", "v1", 0.0)
    assert started["kind"] == "rollout_started" and started["caller"] is None
    last = client.get("/-/rollouts/digits/history", params={"limit": "1"})
    assert [e["kind"] for e in last.json()] == ["paused"]
    assert client.get("/-/rollouts/digits/history?limit=1000").status_code == 200


def test_history_is_read_from_the_store_after_a_restart(store: ModelStore) -> None:
    state = MemoryStateStore()
    first = Admin(store, TOKEN, state)
    first.core.act("digits", "rollback", time.time())
    with TestClient(Admin(store, TOKEN, state).app) as client:
        kinds = [e["kind"] for e in client.get("/-/rollouts/digits/history").json()]
    assert kinds == ["rollout_started", "rolled_back"]


@pytest.mark.parametrize(
    "limit",
    ["0", "1001", "-1", "1.5", "ten", "", "+5", " 5", "1_0", "\uff15", "9" * 40],
)
def test_history_limit_is_checked(client: TestClient, limit: str) -> None:
    response = client.get("/-/rollouts/digits/history", params={"limit": limit})
    assert response.status_code == 400
    assert response.json() == {
        "error": f"limit must be a whole number in [1, 1000]: {limit[:32]!r}"
    }


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/-/rollouts/fraud/history", "no model 'fraud'"),
        ("/-/rollouts/_state/history", "no model '_state'"),
        ("/-/rollouts/di%20gits/history", "no model 'di gits'"),
    ],
)
def test_history_of_an_unknown_model_is_a_json_404(
    client: TestClient, path: str, message: str
) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": message}


def test_history_that_the_store_cannot_read_is_a_503(store: ModelStore) -> None:
    class Unreadable(MemoryStateStore):
        def read_history(self, key: str, limit: int) -> list[dict[str, Any]]:
            raise StoreError("the bucket is gone")

    with TestClient(Admin(store, TOKEN, Unreadable()).app) as client:
        response = client.get("/-/rollouts/digits/history")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "error": "cannot read the rollout history: the bucket is gone"
    }


@fuzz_settings(60)
@given(
    model=st.text(min_size=1, max_size=12),
    limit=st.one_of(st.none(), st.text(max_size=12)),
)
def test_fuzz_history(store: ModelStore, model: str, limit: str | None) -> None:
    """Whatever the model name and limit, a list, or a 4xx with a JSON error."""
    with TestClient(Admin(store, TOKEN).app) as client:
        params = {} if limit is None else {"limit": limit}
        response = client.get(
            f"/-/rollouts/{quote(model, safe='')}/history", params=params
        )
    if response.status_code == 200:
        assert isinstance(response.json(), list)
    else:
        assert response.status_code in (400, 404)
        assert set(response.json()) == {"error"}


def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    assert client.get("/-/nothing").json() == {"error": "Not Found"}
    wrong_method = client.get("/-/rollouts/digits/pause")
    assert wrong_method.status_code == 405


# -- the router's forwarding routes -----------------------------------------


def forwarding_app(call: ValidatorCall, timeout_s: float = 1.0) -> Starlette:
    return Starlette(routes=forwarding_routes(call, timeout_s))


def test_forwarding_reaches_the_validator_app(admin: Admin) -> None:
    seen: list[tuple[str, str, Headers]] = []

    async def call(
        method: str, path: str, query: bytes, headers: Headers, body: bytes
    ) -> ForwardedResponse:
        seen.append((method, path, headers))
        return await call_asgi(admin.app, method, path, query, headers, body)

    with TestClient(forwarding_app(call)) as client:
        metrics = client.get("/metrics", headers={"x-other": "dropped"})
        assert metrics.status_code == 200
        assert set(metrics.headers) == {"content-type", "content-length"}
        paused = client.post("/-/rollouts/digits/pause", headers=bearer(TOKEN), json={})
        assert paused.status_code == 200
        assert paused.json()["rollout"]["phase"] == "paused"
        window = client.get("/-/validation", params={"window_s": "soon"})
        assert window.status_code == 400
    assert [path for _, path, _ in seen] == [
        "/metrics",
        "/-/rollouts/digits/pause",
        "/-/validation",
    ]
    assert {name for _, _, headers in seen for name, _ in headers} <= {
        b"authorization",
        b"content-type",
        b"accept",
        b"x-rayfleet-actor",
        b"x-rayfleet-client",
    }


def test_forwarding_passes_on_the_caller_for_the_record(admin: Admin) -> None:
    seen: list[Headers] = []

    async def call(
        method: str, path: str, query: bytes, headers: Headers, body: bytes
    ) -> ForwardedResponse:
        seen.append(headers)
        return await call_asgi(admin.app, method, path, query, headers, body)

    actor = "alice@laptop\t\x1b[31m" + "x" * 1000
    with TestClient(forwarding_app(call)) as client:
        paused = client.post(
            "/-/rollouts/digits/pause",
            headers={
                **bearer(TOKEN),
                "x-rayfleet-actor": actor,
                # A client cannot say where it comes from: the router does.
                "x-rayfleet-client": "10.9.9.9",
            },
        )
        assert paused.status_code == 200
        assert all(actor[:12] not in value for value in paused.headers.values())
        history = client.get("/-/rollouts/digits/history", headers=bearer(TOKEN))
    client_values = [v for k, v in seen[0] if k == b"x-rayfleet-client"]
    assert client_values == [b"testclient"]
    (entry,) = [e for e in history.json() if e["kind"] == "paused"]
    expected_actor = ("alice@laptop[31m" + "x" * 1000)[:CALLER_MAX_CHARS]
    assert entry["caller"] == {"client": "testclient", "actor": expected_actor}


def test_forwarding_refuses_a_huge_body_before_calling(admin: Admin) -> None:
    calls: list[str] = []

    async def call(
        method: str, path: str, query: bytes, headers: Headers, body: bytes
    ) -> ForwardedResponse:
        calls.append(path)
        return await call_asgi(admin.app, method, path, query, headers, body)

    with TestClient(forwarding_app(call)) as client:
        response = client.post(
            "/-/rollouts/digits/weights",
            headers=bearer(TOKEN),
            content=b" " * (ADMIN_MAX_BODY_BYTES + 1),
        )
        assert response.status_code == 413
        assert calls == []
        negative = client.post(
            "/-/rollouts/digits/weights", headers=bearer(TOKEN), json={"weight": -1}
        )
        assert negative.status_code == 400
        assert (
            "weight: Input should be greater than or equal to 0"
            in (negative.json()["error"])
        )


async def _refuses(
    method: str, path: str, query: bytes, headers: Headers, body: bytes
) -> ForwardedResponse:
    raise ServiceUnavailable("no replica")


async def _hangs(
    method: str, path: str, query: bytes, headers: Headers, body: bytes
) -> ForwardedResponse:
    await asyncio.sleep(60)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("call", [_refuses, _hangs])
@pytest.mark.parametrize("path", ["/metrics", "/-/rollouts", "/-/dashboard"])
def test_a_validator_that_cannot_answer_is_a_503_with_retry_after(
    call: ValidatorCall, path: str
) -> None:
    with TestClient(forwarding_app(call, timeout_s=0.05)) as client:
        response = client.get(path)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"].startswith("the Validator is not answering")


def test_a_validator_503_keeps_its_retry_after() -> None:
    async def busy(
        method: str, path: str, query: bytes, headers: Headers, body: bytes
    ) -> ForwardedResponse:
        body = json.dumps({"error": "busy"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"retry-after", b"7"),
            (b"x-internal", b"secret"),
        ]
        return 503, headers, body

    with TestClient(forwarding_app(busy)) as client:
        response = client.get("/-/rollouts")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert "x-internal" not in response.headers
