"""rayfleet: autoscaling model serving on Ray Serve with canary rollouts.

The public API is what a program needs to describe and check a deployment without
starting Ray: the spec (what ``args`` of a Serve config holds), the model store and
its manifests and signatures, offline validation, and the error types. Serving
itself is started by Serve from ``rayfleet.deployments.app:build`` (see README.md);
everything else is an implementation module whose names may change between
releases.
"""

from rayfleet.platform.config.rollout import GateSpec, RolloutSpec
from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.spec import (
    AutoscalingSpec,
    BatchingSpec,
    ModelSpec,
    ObservationSpec,
    PlatformSpec,
    PoolSpec,
    RequestLogSpec,
    RouterSpec,
    VersionSpec,
    parse_spec,
)
from rayfleet.platform.config.store import Manifest, ModelStore
from rayfleet.platform.config.webhook import WebhookSpec
from rayfleet.platform.constants import PACKAGE_VERSION as __version__
from rayfleet.platform.errors import ConfigError, RayfleetError, StoreError
from rayfleet.platform.validation import OfflineGates, OfflineReport, validate_versions

__all__ = [
    "AutoscalingSpec",
    "BatchingSpec",
    "ConfigError",
    "GateSpec",
    "Manifest",
    "ModelSpec",
    "ModelStore",
    "ObservationSpec",
    "OfflineGates",
    "OfflineReport",
    "PlatformSpec",
    "PoolSpec",
    "RayfleetError",
    "RequestLogSpec",
    "RolloutSpec",
    "RouterSpec",
    "Signature",
    "StoreError",
    "TensorSpec",
    "VersionSpec",
    "WebhookSpec",
    "__version__",
    "parse_spec",
    "validate_versions",
]
