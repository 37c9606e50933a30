"""The Validator through the router: Prometheus text, the JSON report."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rayfleet.cli.demo import digits_split
from rayfleet.platform.runtimes.device import CPU, PYTHON
from tests.monitoring import (
    dashboard_queries,
    exported_series,
    load_dashboard,
    load_rules,
    named_metrics,
    rule_expressions,
)

from .conftest import digits_body

ROWS = digits_split()[1]


def samples(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def v3_ok(found: dict) -> float:
    key = (
        "rayfleet_requests_total",
        (("code", "200"), ("model", "digits"), ("version", "v3")),
    )
    return found.get(key, 0.0)


def test_metrics_and_report_count_the_traffic_sent(http: httpx.Client) -> None:
    before = v3_ok(samples(http))
    body = digits_body(ROWS[:1])
    for _ in range(25):
        response = http.post("/v2/models/digits/versions/v3/infer", json=body)
        assert response.status_code == 200
    deadline = time.monotonic() + 30
    while v3_ok(found := samples(http)) < before + 25:
        assert time.monotonic() < deadline, "observations never reached /metrics"
        time.sleep(0.3)
    assert v3_ok(found) == before + 25
    assert (
        found[("rayfleet_traffic_weight", (("model", "digits"), ("version", "v2")))]
        == 10
    )
    buckets = [
        value
        for (name, labels), value in found.items()
        if name == "rayfleet_request_latency_seconds_bucket"
        and dict(labels)["version"] == "v3"
        and dict(labels)["le"] == "+Inf"
    ]
    assert buckets and buckets[0] >= before + 25

    report = http.get("/-/validation").json()
    digits = next(m for m in report["models"] if m["name"] == "digits")
    v3 = next(v for v in digits["versions"] if v["name"] == "v3")
    assert v3["total_requests"] >= v3_ok(found)
    assert v3["window"]["requests"] >= 25
    assert digits["plan"]["weights"] == {"v2": 10.0, "v3": 0.0, "v1": 90.0}


def test_metrics_name_what_each_replica_runs_on(http: httpx.Client) -> None:
    """Replicas report their device before any traffic: the onnx versions run on
    CPU (none asks for a GPU), the python model says python, and the versions
    placed in the router are reported by the router's replicas."""
    wanted = {("digits", "v1"), ("digits", "v2"), ("double", "v1")}
    deadline = time.monotonic() + 30
    while True:
        info = {
            (labels["model"], labels["version"]): labels
            for (name, pairs), value in samples(http).items()
            if name == "rayfleet_replica_info" and value == 1
            for labels in [dict(pairs)]
        }
        if wanted <= set(info):
            break
        assert time.monotonic() < deadline, f"no device reported: {info}"
        time.sleep(0.5)
    for key, provider in (
        (("digits", "v1"), CPU),
        (("digits", "v2"), CPU),
        (("double", "v1"), PYTHON),
    ):
        assert (info[key]["provider"], info[key]["gpu_requested"]) == (
            provider,
            "false",
        ), info[key]
        assert info[key]["node_id"], info[key]


def test_the_dashboard_and_alerts_read_only_what_metrics_exports(
    http: httpx.Client,
) -> None:
    response = http.get("/metrics")
    assert response.status_code == 200
    exported = exported_series(response.text)
    queries = [
        *dashboard_queries(load_dashboard()),
        *rule_expressions(load_rules()).values(),
    ]
    named = named_metrics(queries)
    assert named and named - set(exported) == set()


def test_validation_rejects_a_bad_window(http: httpx.Client) -> None:
    response = http.get("/-/validation", params={"window_s": "soon"})
    assert response.status_code == 400
    assert "window_s" in response.json()["error"]


def test_admin_routes_refuse_without_token(http: httpx.Client) -> None:
    response = http.post("/-/rollouts/digits/promote")
    assert response.status_code == 401


def _submit(http: httpx.Client, body: dict, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return http.post("/-/validations", json=body, headers=headers)


def test_validation_jobs_run_through_the_validator(http: httpx.Client) -> None:
    from .conftest import ADMIN_TOKEN

    good = {"model": "digits", "candidate": "v2", "baseline": "v1"}
    assert _submit(http, good, None).status_code == 401
    assert _submit(http, {**good, "candidate": "v9"}, ADMIN_TOKEN).status_code == 404
    bad_body = _submit(http, {"model": "digits"}, ADMIN_TOKEN)
    assert bad_body.status_code == 400 and "candidate" in bad_body.json()["error"]

    jobs = {
        "v2": _submit(http, good, ADMIN_TOKEN).json()["id"],
        "v3": _submit(http, {**good, "candidate": "v3"}, ADMIN_TOKEN).json()["id"],
    }
    deadline = time.monotonic() + 120
    results = {}
    while len(results) < 2:
        assert time.monotonic() < deadline, "validation jobs did not finish"
        for version, job_id in jobs.items():
            job = http.get(f"/-/validations/{job_id}").json()
            if job["status"] not in ("queued", "running"):
                results[version] = job
        time.sleep(0.5)
    assert results["v2"]["status"] == "passed", results["v2"]
    assert results["v3"]["status"] == "failed"
    assert results["v3"]["report"]["failures"]
    assert http.get("/-/validations/nope").status_code == 404
