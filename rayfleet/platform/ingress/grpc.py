"""The KServe v2 gRPC service on the router, through Serve's gRPC ingress.

Serve answers gRPC on ``grpc_options.port`` once ``serve.start`` names a servicer
function (:data:`rayfleet.deployments.serve_env.GRPC_SERVICER`, which is
:func:`add_inference_servicer`). Serve registers the service's methods, and calls
each RPC as the method of the same name on the application's ingress deployment,
passing the decoded request message and a ``grpc_context``; the router answers
those through :class:`GrpcInference`. The ``application`` metadata key picks the
application when several are running.

Which process receives the call depends on Serve's mode. Under rayfleet's Serve
environment (HAProxy + direct ingress) each router replica runs its own gRPC
server on a port from 40000 up, and HAProxy listens on ``grpc_options.port`` and
forwards HTTP/2 to them: like HTTP, no Python proxy and no Ray hop. With Serve's
default proxy, the proxy decodes the message and sends it to a router replica
through Ray, pickled.

Every request goes through :meth:`InferenceService.infer`, exactly as over HTTP:
``model_version`` pins a version, the router's sticky key comes from a request
parameter or metadata entry of the same name (``x-session-id`` by default), and
each request is observed. A ModelInfer call's id is its ``x-request-id`` metadata
entry when that is safe (:mod:`.request_id`), else the ``request_id`` Serve gave
the call (the client's entry of that name, or one Serve made), else a new one; the
answer carries it in its trailing metadata as ``x-request-id``, beside Serve's
own ``request_id``, and the request log keeps it. With tracing on, a ModelInfer
call is a span as an HTTP request is, under the caller's ``traceparent`` entry.
Errors are mapped to status codes by
:func:`rayfleet.platform.protocol.grpc_codec.grpc_status`, in one place.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

from rayfleet.platform.errors import PayloadTooLarge, RayfleetError
from rayfleet.platform.ingress.request_id import (
    REQUEST_ID_HEADER,
    new_request_id,
    safe_request_id,
)
from rayfleet.platform.protocol.grpc_codec import (
    decode_infer_request,
    encode_infer_response,
    grpc_status,
    model_metadata_response,
    server_metadata_response,
)
from rayfleet.platform.serving.service import InferenceService

__all__ = ["SERVICE", "GrpcInference", "add_inference_servicer"]

logger = logging.getLogger("ray.serve")

# tritonclient's messages were compiled from "grpc_service.proto" and so pickle as
# classes of a module "grpc_service_pb2" that does not exist. Serve's default proxy
# pickles request messages (all but ModelInfer's, which stay bytes) to send them
# to a replica, which unpickles them: both import this module first (the proxy for
# add_inference_servicer, the replica through router.py), and this makes the name
# an alias of the real module.
sys.modules.setdefault("grpc_service_pb2", service_pb2)

SERVICE = "inference.GRPCInferenceService"

# The RPCs the router answers. The others of the service (repository, shared
# memory, statistics, streaming) are not registered, so gRPC itself answers them
# UNIMPLEMENTED rather than the router failing them as INTERNAL.
_ANSWERED = (
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
)


def add_inference_servicer(servicer: Any, server: Any) -> None:
    """Register the answered RPCs of ``inference.GRPCInferenceService`` on
    ``server``; Serve's ``grpc_servicer_functions`` entry.

    Written as the generated ``add_GRPCInferenceServiceServicer_to_server`` is, with
    request and response types taken from the service's own descriptor, except
    that ModelInfer gets its request serialized: the router decodes it without
    copying the tensors (:func:`decode_infer_request`).
    """
    methods = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for name in _ANSWERED:
        method = methods.methods_by_name[name]
        request_type = getattr(service_pb2, method.input_type.name)
        response_type = getattr(service_pb2, method.output_type.name)
        # No deserializer: the handler gets the request's bytes as they arrived.
        deserialize = None if name == "ModelInfer" else request_type.FromString
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=deserialize,
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers),)
    )
    server.add_registered_method_handlers(SERVICE, handlers)


Rpc = Callable[[Any, Any, Any], Awaitable[Any]]

# Status details travel in a trailer, percent-encoded: up to 12 bytes a character.
# Past the client's metadata limit (8 KiB by default) the client sees
# RESOURCE_EXHAUSTED instead of the status, so a message that quotes a long
# value from the request (an unknown version's name) is cut to fit.
_MAX_DETAILS_CHARS = 512


def _details(message: str) -> str:
    if len(message) <= _MAX_DETAILS_CHARS:
        return message
    return message[: _MAX_DETAILS_CHARS - 3] + "..."


def _traced(rpc: Rpc) -> Rpc:
    """An RPC inside the call's ``rayfleet.infer`` span when the service traces:
    a child of the caller's ``traceparent`` metadata entry, when it sent one."""

    @functools.wraps(rpc)
    async def trace(self: Any, request: Any, grpc_context: Any) -> Any:
        tracing = self.service.tracing
        if tracing is None:
            return await rpc(self, request, grpc_context)
        metadata = dict(grpc_context.invocation_metadata())
        attributes = {"rpc.system": "grpc", "rpc.method": rpc.__name__}
        with tracing.request_span(metadata, attributes) as span:
            reply = await rpc(self, request, grpc_context)
            span.set_status(200)
            return reply

    return trace


def _answered(empty: Callable[[], Any]) -> Callable[[Rpc], Rpc]:
    """An RPC whose errors become a status code and an ``empty()`` reply.

    Setting the code on the context and returning, rather than raising, keeps
    Serve from logging a client's mistake as a server failure.
    """

    def wrap(rpc: Rpc) -> Rpc:
        @functools.wraps(rpc)
        async def guarded(self: Any, request: Any, grpc_context: Any) -> Any:
            try:
                return await rpc(self, request, grpc_context)
            except RayfleetError as error:
                grpc_context.set_code(grpc_status(error))
                grpc_context.set_details(_details(error.message))
            except Exception:  # anything else is a bug: logged, never leaked
                logger.exception("unexpected error in %s", rpc.__name__)
                grpc_context.set_code(grpc.StatusCode.INTERNAL)
                grpc_context.set_details("internal error")
            return empty()

        return guarded

    return wrap


class GrpcInference:
    """The router's gRPC methods, one per answered RPC; needs ``self.service``.

    Serve passes each the request message and its ``RayServegRPCContext``.
    """

    service: InferenceService

    @_answered(service_pb2.ServerLiveResponse)
    async def ServerLive(self, request: Any, grpc_context: Any) -> Any:
        """The router is up: always live."""
        return service_pb2.ServerLiveResponse(live=True)

    @_answered(service_pb2.ServerReadyResponse)
    async def ServerReady(self, request: Any, grpc_context: Any) -> Any:
        """Whether every model is ready."""
        ready = await self.service.server_ready()
        return service_pb2.ServerReadyResponse(ready=ready)

    @_answered(service_pb2.ModelReadyResponse)
    async def ModelReady(self, request: Any, grpc_context: Any) -> Any:
        """Whether the version (every version with traffic, when none) is ready."""
        ready = await self.service.model_ready(request.name, request.version or None)
        return service_pb2.ModelReadyResponse(ready=ready)

    @_answered(service_pb2.ServerMetadataResponse)
    async def ServerMetadata(self, request: Any, grpc_context: Any) -> Any:
        """The server's name, version and extensions."""
        return server_metadata_response(self.service.server_metadata())

    @_answered(service_pb2.ModelMetadataResponse)
    async def ModelMetadata(self, request: Any, grpc_context: Any) -> Any:
        """Versions and signature, as ``GET /v2/models/{m}[/versions/{v}]``."""
        metadata = self.service.model_metadata(request.name, request.version or None)
        return model_metadata_response(metadata)

    @_answered(service_pb2.ModelInferResponse)
    @_traced
    async def ModelInfer(self, request: bytes, grpc_context: Any) -> Any:
        """Decode, choose a version, infer, encode: the HTTP infer route's steps.

        ``request`` is the serialized ModelInferRequest (see
        :func:`add_inference_servicer`); ``router.max_body_bytes`` bounds it as it
        bounds an HTTP body.
        """
        metadata = dict(grpc_context.invocation_metadata())
        request_id = _request_id(metadata, grpc_context.trailing_metadata())
        # Set first, so that an error's answer carries it too.
        grpc_context.set_trailing_metadata([(REQUEST_ID_HEADER, request_id)])
        limit = self.service.spec.router.max_body_bytes
        if len(request) > limit:
            raise PayloadTooLarge(
                f"request of {len(request)} bytes is over the {limit}-byte limit"
            )
        call = decode_infer_request(
            request, max_decoded_bytes=self.service.spec.router.max_decoded_bytes
        )
        model, pin = call.model_name, call.model_version or None
        # An unknown model or version is NOT_FOUND before the inputs are checked,
        # as over HTTP.
        plan = self.service.plan(model)
        if pin:
            plan.choose(pin=pin)
        outcome = await self.service.infer(
            model,
            call.request,
            pin=pin,
            sticky_key=self._sticky_key(call.request.parameters, metadata),
            request_id=request_id,
        )
        return encode_infer_response(outcome.response, call.request.outputs)

    def _sticky_key(
        self, parameters: dict[str, Any], metadata: dict[str, Any]
    ) -> str | None:
        """The router's sticky key: a request parameter, else a metadata entry."""
        name = self.service.spec.router.sticky_header
        if not name:
            return None
        if name in parameters:
            return str(parameters[name])
        value = metadata.get(name.lower())
        return None if value is None else str(value)


def _request_id(metadata: dict[str, Any], trailing: Iterable[tuple[str, Any]]) -> str:
    """The call's id: the client's ``x-request-id``, else the ``request_id`` Serve
    put in the trailing metadata before the call, when safe; else a new one.
    Binary (``-bin``) entries are bytes: never an id."""
    candidates = [metadata.get(REQUEST_ID_HEADER)]
    candidates += [value for key, value in trailing if key == "request_id"]
    for value in candidates:
        found = safe_request_id(value) if isinstance(value, str) else None
        if found is not None:
            return found
    return new_request_id()
