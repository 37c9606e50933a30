"""A python-runtime test model, written straight into a model store.

Shared by the integration suite (one Ray for many tests) and the cluster suite
(where it is the slow model that needs more replicas than one GPU node holds).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.store import MANIFEST, Manifest

__all__ = ["TEST_SIGNATURE", "write_python_version"]

# A python model: y = 2x. x < 0 raises (a model bug); x >= 1000 sleeps x - 1000 ms
# (a slow request); a load_delay_s file makes loading slow (a cold replica).
TEST_MODEL = textwrap.dedent(
    """
    import time
    from pathlib import Path

    import numpy as np


    def load(version_dir):
        delay = Path(version_dir, "load_delay_s")
        if delay.exists():
            time.sleep(float(delay.read_text()))

        def predict(inputs):
            x = inputs["x"]
            if (x < 0).any():
                raise ValueError("negative input")
            slow = x[x >= 1000]
            if slow.size:
                time.sleep((float(slow.max()) - 1000) / 1000)
            return {"y": x * 2}

        return predict
    """
)

TEST_SIGNATURE = Signature(
    inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, 2)),),
    outputs=(TensorSpec(name="y", datatype="FP32", shape=(-1, 2)),),
)


def write_python_version(
    root: Path,
    model: str,
    version: str,
    *,
    source: str = TEST_MODEL,
    signature: Signature = TEST_SIGNATURE,
    **files: str,
) -> None:
    """A python-runtime version straight into a store: the doubling test model
    unless ``source`` (a ``predict.py`` with ``load``) and ``signature`` say
    otherwise; ``files`` are written beside it."""
    folder = root / model / version
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text(source)
    manifest = Manifest(
        runtime="python",
        artifact="predict.py",
        python={"callable": "predict:load"},  # type: ignore[arg-type]
        signature=signature,
    )
    (folder / MANIFEST).write_text(manifest.to_json())
    for name, text in files.items():
        (folder / name).write_text(text)
