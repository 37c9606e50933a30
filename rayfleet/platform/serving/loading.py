"""Making a version ready to serve: fetch its files, load its runtime, warm it up.

Both places a version runs use this one path: a replica of its own
(:class:`rayfleet.deployments.replica.ModelReplica`) and the router's process
(:func:`rayfleet.platform.serving.inprocess.load_runtimes`). Each finishes loading
before it reports healthy, so a version never meets its first client cold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rayfleet.platform.config.spec import VersionSpec
from rayfleet.platform.config.store import Manifest, ModelStore
from rayfleet.platform.runtimes import Runtime, load_runtime, warm_up

__all__ = ["LoadedVersion", "load_version"]


@dataclass(frozen=True)
class LoadedVersion:
    """A version's runtime, warm, and the seconds loading and warming took once
    its files were here."""

    runtime: Runtime
    warm_s: float


def load_version(
    store: ModelStore, model: str, version: VersionSpec, manifest: Manifest
) -> LoadedVersion:
    """Fetch ``version``'s files (none for Triton, which serves them itself),
    load its runtime and run it on the smallest and largest batch it will see."""
    folder = None
    if (version.runtime or manifest.runtime) != "triton":
        folder = store.fetch(model, version.name, version.uri)
    started = time.perf_counter()
    runtime = load_runtime(manifest, folder, version, model=model)
    warm_up(runtime, manifest.signature, version.batching.max_batch_size)
    return LoadedVersion(runtime, time.perf_counter() - started)
