"""Python models: a factory shipped with the version, or any importable callable.

The manifest names ``module:function``. ``module`` is first looked for as a file in
the version's folder (``predict.py`` beside ``model.joblib``, say), so a version
carries its own code; otherwise it is imported normally. ``function(version_dir)``
returns the predictor: a callable from a dict of input arrays to a dict of outputs.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

import numpy as np

from rayfleet.platform.errors import StoreError
from rayfleet.platform.runtimes.device import Device

__all__ = ["PythonRuntime"]

Predictor = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def _import(module_name: str, version_dir: Path) -> ModuleType:
    local = version_dir / (module_name.replace(".", "/") + ".py")
    if local.is_file():
        # A unique name keeps two versions' predict.py from sharing one module.
        unique = f"rayfleet_version_{abs(hash(str(local)))}_{module_name}"
        spec = importlib.util.spec_from_file_location(unique, local)
        if spec is None or spec.loader is None:
            raise StoreError(f"cannot import {local}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(module_name)


class PythonRuntime:
    """A predictor built by a factory the manifest names; ``device`` is what
    reports name it (the predictor's own code picks where it runs)."""

    def __init__(self, entry: str, version_dir: Path, *, device: Device) -> None:
        self.device = device
        module_name, _, function_name = entry.partition(":")
        try:
            factory = getattr(_import(module_name, version_dir), function_name)
        except (ImportError, AttributeError, SyntaxError) as error:
            raise StoreError(f"cannot load python entry {entry!r}: {error}") from error
        self.predictor: Predictor = factory(str(version_dir))

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call the predictor on one batch."""
        outputs = self.predictor(inputs)
        return {name: np.asarray(value) for name, value in outputs.items()}
