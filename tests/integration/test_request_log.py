"""``x-request-id`` and the request log on real Serve: one header per answer, the
client's id kept when safe, and the same ids in the Parquet parts a router writes
to the store, with its counters in ``/metrics``."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pyarrow.dataset as pads
from ray import serve

from rayfleet.deployments.app import build

from .conftest import delete_app, digits_body
from .test_rollout import ROWS, rollout_args, wait_for

GENERATED = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _logged_ids(store: Path) -> set[str]:
    folder = store / "_logs" / "digits" / "v1"
    if not folder.exists():
        return set()
    table = pads.dataset(str(folder), format="parquet", partitioning="hive").to_table()
    return set(table.column("request_id").to_pylist())


def test_request_ids_reach_the_answer_and_the_log(serve_url: str, store: Path) -> None:
    # The only app of the session with a request log: the folder is this test's.
    args = rollout_args(
        store,
        [
            {
                "name": "digits",
                "versions": [{"name": "v1", "placement": "router"}],
            }
        ],
        request_log={"enabled": True, "sample_rate": 1.0, "flush_every_s": 0.5},
    )
    serve.run(build(args), name="reqlog", route_prefix="/reqlog")
    url = f"{serve_url}/reqlog"
    path = "/v2/models/digits/infer"
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            kept = client.post(
                path, json=digits_body(ROWS[:4]), headers={"x-request-id": "trace-it-1"}
            )
            fresh = client.post(path, json=digits_body(ROWS[:2]))
            unsafe = client.post(
                path, json=digits_body(ROWS[:1]), headers={"x-request-id": "no good!"}
            )
        assert [r.status_code for r in (kept, fresh, unsafe)] == [200] * 3
        assert kept.headers.get_list("x-request-id") == ["trace-it-1"]
        [generated] = fresh.headers.get_list("x-request-id")
        assert GENERATED.fullmatch(generated)
        # Serve's own middleware echoes what the client sent; the router adds
        # the id it used instead, which the log keeps.
        [replaced] = [
            i for i in unsafe.headers.get_list("x-request-id") if i != "no good!"
        ]
        assert GENERATED.fullmatch(replaced)
        expected = {"trace-it-1", generated, replaced}
        wait_for(lambda: _logged_ids(store) == expected, 60, "the log's parts")
        wait_for(
            lambda: (
                "rayfleet_request_log_rows_total{router="
                in httpx.get(f"{url}/metrics", timeout=10).text
            ),
            60,
            "the request log's counters in /metrics",
        )
    finally:
        delete_app("reqlog")
