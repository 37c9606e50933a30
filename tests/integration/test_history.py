"""Every rollout decision on record, on real Serve: the history outlives the
Validator, and each decision is a JSON line in the Validator's Serve log.

digits v1 is stable (in the router), v3 (bad predictions) the first canary and v2
the second. v3 is rolled back by its gates; an operator pauses v2 through the CLI;
the Validator is killed; the new one serves both decisions, with the gate values
and the operator's name, to ``rayfleet rollout history``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray import serve

from rayfleet.cli.admin_client import actor
from rayfleet.cli.main import main
from rayfleet.deployments.app import build

from .conftest import delete_app
from .test_rollout import Client, rollout_args, wait_for

# Where Serve writes each replica's log (the README sends operators here).
SERVE_LOGS = Path("/tmp/ray/session_latest/logs/serve")


def _rollout(url: str) -> dict[str, Any]:
    rollouts: dict[str, Any] = httpx.get(f"{url}/-/rollouts", timeout=10).json()
    return rollouts["digits"]


def test_history_shows_the_rollback_and_the_operator_after_a_restart(
    serve_url: str, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    args = rollout_args(
        store,
        [
            {
                "name": "digits",
                "rollout": {
                    "steps": [10, 100],
                    "min_requests_per_step": 100,
                    "min_step_s": 2,
                    "evaluate_every_s": 0.5,
                    # The rollback must come from predictions, not from a p99
                    # over a few dozen requests on a shared 2-core machine.
                    "gates": {"max_model_p99_ratio": None},
                },
                "versions": [
                    {"name": "v1", "placement": "router"},
                    {"name": "v3", "canary": True, "num_cpus": 0.1},
                    {"name": "v2", "canary": True, "num_cpus": 0.1},
                ],
            }
        ],
    )
    # As the shipped configs log: JSON lines, rayfleet's events as their fields.
    serve.run(
        build(args),
        name="history",
        route_prefix="/history",
        logging_config={"encoding": "JSON", "log_level": "INFO"},
    )
    url = f"{serve_url}/history"
    client = Client(url)
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: (
                _rollout(url)["finished"] == {"v3": "rolled_back"}
                and _rollout(url)["rollout"]["phase"] == "canary"
            ),
            200,
            "v3 rolled back and v2 at its first step",
        )
        assert main(["rollout", "pause", "--model", "digits", "--url", url]) == 0
    finally:
        client.stop.set()
        thread.join(timeout=60)
    capsys.readouterr()

    names = [
        found["name"]
        for found in ray.util.list_named_actors(all_namespaces=True)
        if "history#Validator#" in found["name"]
    ]
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)

    def back() -> bool:
        try:
            return bool(_rollout(url)["rollout"]["phase"] == "paused")
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    wait_for(back, 120, "the Validator to come back with v2 paused")

    # The table: the rollback with its failing gate and value, then the pause.
    assert main(["rollout", "history", "--model", "digits", "--url", url]) == 0
    table = capsys.readouterr().out
    lines = table.splitlines()
    rollback = next(i for i, line in enumerate(lines) if " rolled_back " in line)
    assert "v3" in lines[rollback] and "validator" in lines[rollback]
    assert lines[rollback + 1].startswith("    failed: "), table
    assert any(" paused " in line and actor() in line for line in lines), table

    # The same as JSON: every decision of both canaries, in order.
    argv = ["rollout", "history", "--model", "digits", "--json", "--url", url]
    assert main(argv) == 0
    entries = json.loads(capsys.readouterr().out)
    moves = [(e["kind"], e["canary"]) for e in entries]
    for expected in [
        ("rollout_started", "v3"),
        ("step_advanced", "v3"),
        ("rolled_back", "v3"),
        ("rollout_started", "v2"),
        ("step_advanced", "v2"),
        ("paused", "v2"),
    ]:
        assert expected in moves, moves
    assert moves.index(("rolled_back", "v3")) < moves.index(("paused", "v2"))
    (rolled_back,) = [e for e in entries if e["kind"] == "rolled_back"]
    failing = [g for g in rolled_back["gates"] if g["verdict"] == "fail"]
    assert failing, rolled_back
    for gate in failing:
        beyond = gate["value"] > gate["threshold"]
        assert beyond if gate["bound"] == "max" else not beyond, gate
        # The table shows the value the decision rested on.
        assert f"    failed: {gate['name']} {gate['value']:.4g} " in table, table
    (paused,) = [e for e in entries if e["kind"] == "paused"]
    assert paused["caller"]["actor"] == actor()
    assert paused["caller"]["client"]

    # One JSON line per decision in the Validator's Serve log, its fields those of
    # the line, flushed despite the throughput preset's buffering; the first
    # replica's file stays.
    logged = [
        record
        for path in SERVE_LOGS.glob("replica_history_Validator_*.log")
        for record in map(json.loads, path.read_text().splitlines())
        if str(record.get("event", "")).startswith("rollout_")
    ]
    assert all(line["message"] == line["event"] for line in logged), logged
    kinds = {(line["event"], line["kind"], line["canary"]) for line in logged}
    assert ("rollout_decision", "rolled_back", "v3") in kinds, kinds
    assert ("rollout_operator_action", "paused", "v2") in kinds, kinds
    delete_app("history")
