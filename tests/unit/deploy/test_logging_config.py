"""The shipped Serve configs set the rayfleet application's ``logging_config``:
JSON lines at INFO with access logs, as README's "Logs" describes, in a form
Serve's own schema accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import EncodingType, ServeDeploySchema

from rayfleet.cli.check import RAYFLEET_IMPORT_PATH

ROOT = Path(__file__).resolve().parents[3]


def _configs() -> dict[str, dict[str, Any]]:
    rayservice = yaml.safe_load((ROOT / "deploy/kuberay/rayservice.yaml").read_text())
    return {
        "configs/demo.yaml": yaml.safe_load((ROOT / "configs/demo.yaml").read_text()),
        "configs/gpu.yaml": yaml.safe_load((ROOT / "configs/gpu.yaml").read_text()),
        "deploy/kuberay/rayservice.yaml": yaml.safe_load(
            rayservice["spec"]["serveConfigV2"]
        ),
    }


CONFIGS = _configs()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_rayfleet_application_logs_json_at_info(name: str) -> None:
    (app,) = [
        app
        for app in CONFIGS[name]["applications"]
        if app["import_path"] == RAYFLEET_IMPORT_PATH
    ]
    assert app["logging_config"] == {
        "encoding": "JSON",
        "log_level": "INFO",
        "enable_access_log": True,
    }


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_serve_reads_the_logging_config_as_written(name: str) -> None:
    schema = ServeDeploySchema.model_validate(CONFIGS[name])
    (logging_config,) = [app.logging_config for app in schema.applications]
    assert logging_config is not None
    assert logging_config.encoding == EncodingType.JSON
    assert logging_config.log_level == "INFO"
    assert logging_config.enable_access_log is True
    # Serve's default folder: README names it as where the files are.
    assert logging_config.logs_dir is None
