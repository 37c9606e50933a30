"""rayfleet: autoscaling model serving on Ray Serve with canary rollouts."""

from rayfleet.platform.constants import PACKAGE_VERSION as __version__

__all__ = ["__version__"]
