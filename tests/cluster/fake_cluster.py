"""A fake multi-node Ray cluster whose node types are the shipped ``cluster.yaml``'s.

Ray's fake multi-node provider (``ray/autoscaler/_private/fake_multi_node``) runs
the autoscaler for real: it reads resource demand from the cluster, picks node
types, and "launches" a node by starting another raylet on this machine with the
type's declared resources and labels. Ray then schedules on those declared
resources exactly as on a cloud, so a replica that asks for ``num_gpus: 0.25``
lands on a node that declares a GPU even though no GPU exists; its onnxruntime
falls back to CPU and says so.

What differs from ``cluster.yaml`` is scaled to fit a 2-core machine: CPU counts
(by ``CPU_SCALE``, and the configs' ``num_cpus`` with them), at most
``MAX_WORKERS`` workers, and a short idle timeout so that an idle node goes
within a test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# cluster.yaml's CPUs over this machine's: head 8 -> 2, g5.xlarge 4 -> 1.
CPU_SCALE = 0.25
# A head and at most two running workers: each fake node is a raylet, an object
# store, a dashboard agent and Serve's node processes on the same two cores. The
# autoscaler may list one more: a node whose raylet was killed stays listed by
# the fake provider (v1 calls it "uninitialized"; it has no node updater to
# restart Ray there), and still counts against max_workers.
MAX_WORKERS = 3
IDLE_TIMEOUT_MINUTES = 0.2
OBJECT_STORE_BYTES = 100_000_000
# The fake provider names its head node type this way, whatever the file says.
FAKE_HEAD_TYPE = "ray.head.default"


def scaled_cpus(cpus: float) -> float:
    """A ``num_cpus`` or node CPU count scaled to this machine (2 decimals)."""
    return math.floor(cpus * CPU_SCALE * 100) / 100


def autoscaling_config(cluster: Mapping[str, Any], gcs_address: str) -> dict[str, Any]:
    """The fake provider's autoscaling config for ``cluster`` (a loaded cluster.yaml).

    Node types keep their names, GPUs, labels and min/max workers (max capped at
    ``MAX_WORKERS``); CPUs are scaled. The head type is renamed to the fake
    provider's own name.
    """
    head = cluster["head_node_type"]
    node_types: dict[str, Any] = {}
    for name, node_type in cluster["available_node_types"].items():
        resources = dict(node_type.get("resources", {}))
        resources["CPU"] = scaled_cpus(resources.get("CPU", 0))
        entry: dict[str, Any] = {
            "resources": resources,
            "labels": dict(node_type.get("labels", {})),
            "node_config": {},
        }
        if name == head:
            entry["max_workers"] = 0
            node_types[FAKE_HEAD_TYPE] = entry
            continue
        resources["object_store_memory"] = OBJECT_STORE_BYTES
        entry["min_workers"] = node_type.get("min_workers", 0)
        entry["max_workers"] = min(node_type.get("max_workers", 0), MAX_WORKERS)
        node_types[name] = entry
    return {
        "cluster_name": "rayfleet-fake",
        "max_workers": min(cluster.get("max_workers", MAX_WORKERS), MAX_WORKERS),
        "upscaling_speed": cluster.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            # Every fake node has this machine's IP: the autoscaler tells them
            # apart by node id instead.
            "use_node_id_as_ip": True,
            # No SSH and no setup commands: a fake node is up when its raylet is.
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": node_types,
        "head_node_type": FAKE_HEAD_TYPE,
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def head_args(config: Mapping[str, Any]) -> list[str]:
    """``ray start --head`` flags for the head type of an :func:`autoscaling_config`."""
    head = config["available_node_types"][FAKE_HEAD_TYPE]
    resources = head["resources"]
    labels = ",".join(f"{key}={value}" for key, value in head["labels"].items())
    # ray start takes whole numbers here.
    args = [
        f"--num-cpus={int(resources['CPU'])}",
        f"--num-gpus={int(resources.get('GPU', 0))}",
    ]
    return [*args, f"--labels={labels}"] if labels else args
