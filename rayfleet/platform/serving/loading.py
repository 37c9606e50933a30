"""Making a version ready to serve: fetch its files, load its runtime, warm it up.

Both places a version runs use this one path: a replica of its own
(:class:`rayfleet.deployments.replica.ModelReplica`) and the router's process
(:func:`rayfleet.platform.serving.inprocess.load_runners`). Each finishes loading
before it reports healthy, so a version never meets its first client cold.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rayfleet.platform.config.spec import VersionSpec
from rayfleet.platform.config.store import Manifest, ModelStore
from rayfleet.platform.runtimes import Runtime, load_runtime, warm_up

__all__ = ["LoadedVersion", "load_version"]


@dataclass(frozen=True)
class LoadedVersion:
    """A version's runtime, warm, and the seconds loading and warming took once
    its files were here; ``scratch``, the local copy of a remote store's files
    that the caller owns (None when the runtime reads the store in place)."""

    runtime: Runtime
    warm_s: float
    scratch: Path | None = None

    def discard_files(self) -> None:
        """Delete the local copy, once the runtime is gone: a pool that loads
        and unloads versions all day would otherwise fill the disk."""
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def load_version(
    store: ModelStore, model: str, version: VersionSpec, manifest: Manifest
) -> LoadedVersion:
    """Fetch ``version``'s files (none for Triton, which serves them itself),
    load its runtime and run it on the smallest and largest batch it will see."""
    folder = scratch = None
    if (version.runtime or manifest.runtime) != "triton":
        folder = store.fetch(model, version.name, version.uri)
        if store.copies(model, version.name, version.uri):
            scratch = folder
    started = time.perf_counter()
    try:
        runtime = load_runtime(manifest, folder, version, model=model)
        warm_up(runtime, manifest.signature, version.batching.max_batch_size)
    except BaseException:
        # A pool retries a version that failed to load: each failed try must
        # not leave its copy behind.
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    return LoadedVersion(runtime, time.perf_counter() - started, scratch)
