"""The name Serve's gRPC proxies import: ``grpc_servicer_functions`` in a Serve config.

Configs and clusters name ``rayfleet.deployments.grpc_ingress.add_inference_servicer``
(:data:`rayfleet.deployments.serve_env.GRPC_SERVICER`); the service itself is Ray-free
and lives in :mod:`rayfleet.platform.ingress.grpc`. Importing this module also makes
tritonclient's messages unpickle under the name they were compiled with.
"""

from rayfleet.platform.ingress.grpc import add_inference_servicer

__all__ = ["add_inference_servicer"]
