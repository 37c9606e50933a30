"""``import rayfleet`` gives the documented public API, and only that."""

from __future__ import annotations

import subprocess
import sys
import types
from importlib import metadata

import rayfleet


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(rayfleet).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(rayfleet.__all__) == public | {"__version__"}
    assert all(getattr(rayfleet, name) is not None for name in rayfleet.__all__)


def test_version_is_the_installed_distribution() -> None:
    assert rayfleet.__version__ == metadata.version("rayfleet")


def test_a_spec_round_trips_through_the_public_api() -> None:
    spec = rayfleet.parse_spec(
        {"store": "/models", "models": [{"name": "m", "versions": [{"name": "v1"}]}]}
    )
    assert isinstance(spec, rayfleet.PlatformSpec)
    assert spec.models[0].versions[0].name == "v1"


def test_importing_the_package_starts_no_ray() -> None:
    # The public API describes a deployment; it must not drag Ray into a program
    # (a CI job checking a config) that only wants to validate one.
    code = "import sys, rayfleet; print('ray' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
