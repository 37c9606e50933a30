"""The package's public API is what its modules export, and nothing else."""

from __future__ import annotations

import importlib
import pkgutil
import re

import rayfleet.platform.validation as validation


def test_every_module_declares_all() -> None:
    exported: set[str] = set()
    for module_info in pkgutil.iter_modules(validation.__path__):
        module = importlib.import_module(f"{validation.__name__}.{module_info.name}")
        names = module.__all__
        assert all(hasattr(module, name) for name in names), module_info.name
        if not module_info.name.startswith("_"):
            exported.update(names)
    assert set(validation.__all__) == exported
    assert all(getattr(validation, name) is not None for name in validation.__all__)


def test_imports_neither_ray_nor_scipy_nor_starlette() -> None:
    banned = re.compile(r"^\s*(from|import)\s+(ray|scipy|starlette)\b", re.MULTILINE)
    for module_info in pkgutil.iter_modules(validation.__path__):
        path = f"{validation.__path__[0]}/{module_info.name}.py"
        with open(path, encoding="utf-8") as source:
            assert not banned.search(source.read()), module_info.name
