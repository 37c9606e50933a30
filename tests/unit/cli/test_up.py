"""``rayfleet up`` runs each application as ``serve deploy`` would: Ray and Serve
stand-ins record the calls, and nothing is started."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rayfleet.cli import up
from rayfleet.cli.serve_config import load_serve_config

ROOT = Path(__file__).resolve().parents[3]


def test_each_application_runs_with_its_logging_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def no_ray() -> Iterator[None]:
        yield

    monkeypatch.setattr(up, "apply_serve_env", lambda: {})
    monkeypatch.setattr(up, "busy_ports", lambda ports: [])
    monkeypatch.setattr(up, "_local_ray", no_ray)
    monkeypatch.setattr(up, "_sleep_until_signalled", lambda: None)
    monkeypatch.setattr(up, "build", lambda args: ("app", args["store"]))
    monkeypatch.setattr(up.serve, "start", lambda **options: None)
    monkeypatch.setattr(up.serve, "run", lambda target, **options: runs.append(options))
    config = load_serve_config(str(ROOT / "configs" / "demo.yaml"))
    assert up.serve_config_locally(config) == 0
    assert runs == [
        {
            "name": "rayfleet",
            "route_prefix": "/",
            "logging_config": {
                "encoding": "JSON",
                "log_level": "INFO",
                "enable_access_log": True,
            },
        }
    ]
