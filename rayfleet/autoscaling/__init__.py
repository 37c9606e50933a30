"""Request-count autoscaling for Serve deployments.

:mod:`rayfleet.autoscaling.policy` is the pure decision (no Ray);
:mod:`rayfleet.autoscaling.serve_policy` is what Serve's controller calls, and
builds a version's ``autoscaling_config``. Import it explicitly: this package does
not, so the policy imports without Ray.
"""

from rayfleet.autoscaling.policy import PolicyState, RequestCountPolicy, decide

__all__ = ["PolicyState", "RequestCountPolicy", "decide"]
