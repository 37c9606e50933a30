"""The package's public API is what its modules export, and nothing else.

The two gRPC modules are the exception: they load ``grpc`` and
``tritonclient.grpc``, so their names are imported from the modules themselves and
the package stays light for the HTTP path and the rest of the core.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys

import rayfleet.platform.protocol as protocol

GRPC_MODULES = {"grpc_codec", "grpc_wire"}


def _modules() -> list[str]:
    return [info.name for info in pkgutil.iter_modules(protocol.__path__)]


def test_every_module_declares_all() -> None:
    exported: set[str] = set()
    for name in _modules():
        module = importlib.import_module(f"{protocol.__name__}.{name}")
        names = module.__all__
        assert all(hasattr(module, export) for export in names), name
        if name not in GRPC_MODULES:
            exported.update(names)
    assert set(protocol.__all__) == exported
    assert all(getattr(protocol, name) is not None for name in protocol.__all__)


def test_the_grpc_modules_exist() -> None:
    assert set(_modules()) >= GRPC_MODULES


def test_importing_the_package_loads_no_grpc() -> None:
    code = (
        "import sys, rayfleet.platform.protocol; "
        "print(sorted(m for m in ('grpc', 'tritonclient.grpc') if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"


def test_imports_neither_ray_nor_starlette_nor_the_test_helpers() -> None:
    banned = re.compile(
        r"^\s*(from|import)\s+(ray|starlette|rayfleet\.testing)\b", re.MULTILINE
    )
    for name in _modules():
        path = f"{protocol.__path__[0]}/{name}.py"
        with open(path, encoding="utf-8") as source:
            assert not banned.search(source.read()), name
