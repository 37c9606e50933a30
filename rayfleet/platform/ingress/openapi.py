"""An OpenAPI 3.1 document generated from a Starlette app's route table.

Each route and method is described by an :class:`Operation`: the typed models
its body is read as, its parameters, what it answers and which errors it raises.
:func:`openapi_document` walks the routes themselves and refuses a route or
method without a description, a description without a route, and a path
parameter without one, so the document cannot drift from the table. Body schemas
are the models' own ``model_json_schema()``; errors are the types of
:mod:`rayfleet.platform.errors`, each with the status and body the ingress
answers it with.

Version 3.1 because its schemas are JSON Schema 2020-12, which is what pydantic
writes (``null`` as a type, ``const``), so the models' schemas go in unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.json_schema import JsonSchemaMode
from starlette.routing import BaseRoute, Route

from rayfleet.platform.errors import (
    RayfleetError,
    ServiceUnavailable,
    Unauthorized,
    error_body,
    http_status,
)

__all__ = [
    "ERROR_SCHEMA",
    "OPENAPI_VERSION",
    "REF_PREFIX",
    "ErrorCase",
    "Operation",
    "Param",
    "Reply",
    "RouteTableMismatch",
    "TokenUse",
    "openapi_document",
    "typed_schemas",
]

OPENAPI_VERSION = "3.1.0"
REF_PREFIX = "#/components/schemas/"
_REF_TEMPLATE = REF_PREFIX + "{model}"

# What error_response writes for every RayfleetError (error_body), and for a bug
# ({"error": "internal error"}): one key, always.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error's body: its message, and nothing else.",
    "properties": {"error": {"type": "string"}},
    "required": sorted(error_body(RayfleetError("")).keys()),
    "additionalProperties": False,
}

_SECURITY_SCHEME = "bearerToken"

# Starlette answers HEAD on every GET route by itself; it is no operation of ours.
_IMPLIED_METHODS = frozenset({"HEAD"})

TokenUse = Literal["none", "optional", "required"]


class RouteTableMismatch(ValueError):
    """The route table and its descriptions disagree: a route, method or path
    parameter without a description, or a description of none."""


@dataclass(frozen=True)
class Param:
    """A path or query parameter: its name, what it means, its JSON Schema."""

    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Reply:
    """A successful answer: status, media type and body schema (which may
    ``$ref`` a schema of :func:`typed_schemas` or of ``components``)."""

    description: str
    schema: Mapping[str, Any]
    media_type: str = "application/json"
    status: int = 200


@dataclass(frozen=True)
class ErrorCase:
    """One way an operation fails: the error type raised, and when."""

    kind: type[RayfleetError]
    when: str


@dataclass(frozen=True)
class Operation:
    """What one method of one route takes and answers.

    ``bodies`` are the models the body is read as (several: any one of them);
    the body is optional when one of them reads ``{}``, as an empty body reads.
    ``token`` says whether the route needs the bearer token (``required``: a
    401 without it) or only shows more with it (``optional``).
    """

    summary: str
    reply: Reply
    bodies: tuple[type[BaseModel], ...] = ()
    path: tuple[Param, ...] = ()
    query: tuple[Param, ...] = ()
    errors: tuple[ErrorCase, ...] = ()
    token: TokenUse = "none"


def typed_schemas(
    kinds: Iterable[tuple[Any, JsonSchemaMode]],
) -> tuple[dict[tuple[Any, JsonSchemaMode], dict[str, Any]], dict[str, Any]]:
    """The JSON Schemas of ``kinds`` (models, dataclasses, any type pydantic
    reads), with references into ``#/components/schemas``.

    Returns each kind's schema (usually a ``$ref``) and the named schemas those
    reference, for the document's components.
    """
    inputs = [(kind, mode, TypeAdapter(kind)) for kind, mode in kinds]
    schemas, defs = TypeAdapter.json_schemas(inputs, ref_template=_REF_TEMPLATE)
    return dict(schemas), dict(defs.get("$defs", {}))


def openapi_document(
    routes: Sequence[BaseRoute],
    operations: Mapping[tuple[str, str], Operation],
    *,
    info: Mapping[str, Any],
    components: Mapping[str, Mapping[str, Any]] | None = None,
    everywhere: Sequence[ErrorCase] = (),
) -> dict[str, Any]:
    """The OpenAPI document of ``routes``, each ``(method, path)`` described by
    ``operations``.

    ``components`` are named schemas the replies reference; ``everywhere`` are
    errors any operation can answer (a router in front that cannot reach the
    app). Raises :class:`RouteTableMismatch` when routes and operations differ.
    """
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    _merge(schemas, components or {})
    bodies = sorted(
        {model for op in operations.values() for model in op.bodies},
        key=lambda model: model.__name__,
    )
    body_refs, body_defs = typed_schemas((model, "validation") for model in bodies)
    _merge(schemas, body_defs)

    paths: dict[str, dict[str, Any]] = {}
    described: set[tuple[str, str]] = set()
    for route in routes:
        if not isinstance(route, Route):
            raise RouteTableMismatch(f"{route!r} is not a plain route")
        methods = sorted((route.methods or set()) - _IMPLIED_METHODS)
        for method in methods:
            key = (method, route.path)
            if key not in operations:
                raise RouteTableMismatch(f"{method} {route.path} has no description")
            operation = operations[key]
            described.add(key)
            operation_id = route.name if len(methods) == 1 else f"{route.name}_{method}"
            paths.setdefault(route.path, {})[method.lower()] = _operation(
                route,
                operation,
                operation_id,
                [body_refs[(model, "validation")] for model in operation.bodies],
                everywhere,
            )
    if undescribed := sorted(set(operations) - described):
        raise RouteTableMismatch(f"descriptions of no route: {undescribed}")
    return {
        "openapi": OPENAPI_VERSION,
        "info": dict(info),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {_SECURITY_SCHEME: {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(
    route: Route,
    operation: Operation,
    operation_id: str,
    body_schemas: list[dict[str, Any]],
    everywhere: Sequence[ErrorCase],
) -> dict[str, Any]:
    """One method of one route, as an OpenAPI operation object."""
    declared = {param.name for param in operation.path}
    if declared != set(route.param_convertors):
        raise RouteTableMismatch(
            f"{route.path}: path parameters {sorted(route.param_convertors)}, "
            f"described {sorted(declared)}"
        )
    reply = operation.reply
    result: dict[str, Any] = {
        "operationId": operation_id,
        "summary": operation.summary,
        "parameters": [
            *(_parameter(param, "path") for param in operation.path),
            *(_parameter(param, "query") for param in operation.query),
        ],
        "responses": {
            str(reply.status): {
                "description": reply.description,
                "content": {reply.media_type: {"schema": dict(reply.schema)}},
            },
            **_error_responses(operation, everywhere),
        },
    }
    if body_schemas:
        result["requestBody"] = {
            "required": not any(_reads_empty(model) for model in operation.bodies),
            "content": {
                "application/json": {
                    "schema": (
                        body_schemas[0]
                        if len(body_schemas) == 1
                        else {"anyOf": body_schemas}
                    )
                }
            },
        }
    if operation.token == "required":
        result["security"] = [{_SECURITY_SCHEME: []}]
    elif operation.token == "optional":
        # An empty requirement: anonymous callers are let in too.
        result["security"] = [{}, {_SECURITY_SCHEME: []}]
    return result


def _parameter(param: Param, where: Literal["path", "query"]) -> dict[str, Any]:
    return {
        "name": param.name,
        "in": where,
        "required": where == "path",
        "description": param.description,
        "schema": dict(param.schema),
    }


def _error_responses(
    operation: Operation, everywhere: Sequence[ErrorCase]
) -> dict[str, Any]:
    """The operation's errors grouped by the status the ingress gives them.

    A required token adds its 401, and every operation can meet a bug: a 500.
    """
    cases = [*operation.errors, *everywhere]
    if operation.token == "required":
        cases.append(ErrorCase(Unauthorized, "no bearer token, or the wrong one"))
    by_status: dict[int, list[str]] = {}
    retry_after: set[int] = set()
    for case in cases:
        # http_status reads the type only; the message is never looked at.
        status = http_status(case.kind(""))
        by_status.setdefault(status, []).append(f"{case.kind.__name__}: {case.when}")
        if issubclass(case.kind, ServiceUnavailable):
            retry_after.add(status)
    by_status.setdefault(500, []).append(
        'an unexpected error (a bug): logged, and answered "internal error"'
    )
    responses: dict[str, Any] = {}
    for status, whens in sorted(by_status.items()):
        response: dict[str, Any] = {
            "description": "; ".join(whens),
            "content": {"application/json": {"schema": {"$ref": REF_PREFIX + "Error"}}},
        }
        if status in retry_after:
            response["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before trying again",
                    "schema": {"type": "integer", "minimum": 0},
                }
            }
        responses[str(status)] = response
    return responses


def _reads_empty(model: type[BaseModel]) -> bool:
    """Whether ``model`` reads ``{}``: then an empty body is one it takes."""
    try:
        model.model_validate({})
    except ValidationError:
        return False
    return True


def _merge(into: dict[str, Any], named: Mapping[str, Any]) -> None:
    """Add ``named`` schemas to ``into``; two different schemas of one name is a
    mismatch, since a reference could then mean either."""
    for name, schema in named.items():
        if into.setdefault(name, schema) != schema:
            raise RouteTableMismatch(f"two different schemas named {name!r}")
