"""``rayfleet check``: find what is wrong with a deploy file before a cluster does.

The kind of file is told from its keys:

- a Serve config (``applications:``) is checked against Serve's own schema, then
  the rayfleet spec under ``args`` of every application that
  ``rayfleet.deployments.app:build`` builds; optionally, every version it names must
  be in its store;
- a ``ray up`` cluster config (``provider:``) is checked against the autoscaler JSON
  schema that ships inside the ray package, plus the cross-field rules ``ray up``
  applies after it;
- a KubeRay ``RayService`` has its embedded ``serveConfigV2`` checked as a Serve
  config.

Nothing here starts Ray or reaches a cloud: ``ray.serve.schema`` holds pydantic
models only, and the autoscaler schema is read as a file. Every problem names the
file and the field path, e.g.
``configs/x.yaml: applications.0.args.models.0.versions.1.batching.max_batch_size:
Input should be greater than 0``.
"""

from __future__ import annotations

import importlib.util
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from rayfleet.platform.config.spec import PlatformSpec, parse_spec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.errors import ConfigError, StoreError

__all__ = [
    "RAYFLEET_IMPORT_PATH",
    "CheckResult",
    "FileKind",
    "check_cluster_config",
    "check_file",
    "check_rayservice",
    "check_serve_config",
    "file_kind",
]

RAYFLEET_IMPORT_PATH = "rayfleet.deployments.app:build"

FileKind = Literal["serve", "cluster", "rayservice"]

_KIND_NAMES: dict[FileKind, str] = {
    "serve": "Serve config",
    "cluster": "ray up cluster config",
    "rayservice": "KubeRay RayService",
}


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check_file` found: the file's kind and its problems, if any.

    Each problem is one message, possibly of several lines, that names the file.
    """

    path: str
    kind: FileKind | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether the file passed every check."""
        return not self.problems

    def summary(self) -> str:
        """One line for a file that passed, e.g. ``cluster.yaml: ok (...)``."""
        kind = _KIND_NAMES[self.kind] if self.kind is not None else "unknown file"
        return f"{self.path}: ok ({kind})"


def file_kind(document: object) -> FileKind | None:
    """Which kind of deploy file a parsed YAML document is, or ``None``."""
    if not isinstance(document, Mapping):
        return None
    if document.get("kind") == "RayService":
        return "rayservice"
    if "applications" in document:
        return "serve"
    if "provider" in document or "available_node_types" in document:
        return "cluster"
    return None


def check_file(path: str, *, store_check: bool = False) -> CheckResult:
    """Read ``path``, tell its kind and check it; see the module docstring.

    ``store_check`` also opens the store of every rayfleet application and reads
    the manifest of each version it serves (a relative store path is taken from
    the current directory).
    """
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        return CheckResult(path, None, (f"{path}: cannot read: {error}",))
    kind = file_kind(document)
    if kind == "serve":
        problems = check_serve_config(document, path, store_check=store_check)
    elif kind == "cluster":
        problems = check_cluster_config(document, path)
    elif kind == "rayservice":
        problems = check_rayservice(document, path, store_check=store_check)
    else:
        problems = [
            f"{path}: cannot tell what this file is: expected a Serve config "
            "(with 'applications'), a ray up cluster config (with 'provider') or "
            "a KubeRay RayService (with 'kind: RayService')"
        ]
    return CheckResult(path, kind, tuple(problems))


def check_serve_config(
    config: Any, where: str, *, store_check: bool = False
) -> list[str]:
    """Problems with a Serve config; ``where`` prefixes every field path.

    Serve's schema comes first. It ignores keys it does not know, so a misspelt
    key would silently do nothing: those are reported here too. Then each rayfleet
    application's ``args`` go through :func:`~rayfleet.platform.config.spec.parse_spec`,
    the same check ``serve deploy`` runs when it builds the app.
    """
    # Imported here so that the other kinds of file, and the rest of the CLI,
    # do not pay for importing Ray.
    from ray.serve.schema import ServeDeploySchema

    from rayfleet.deployments.app import label_selector_problems

    problems = []
    try:
        ServeDeploySchema.model_validate(config)
    except ValidationError as error:
        problems.append(
            _block("invalid Serve config", _pydantic_lines(where, config, error))
        )
    unknown = _unknown_keys(ServeDeploySchema, config, ())
    if unknown:
        lines = [f"{where}: {_dotted(path)}: unknown key" for path in unknown]
        problems.append(_block("keys Serve would ignore", lines))
    if not isinstance(config, Mapping):
        return problems
    applications = config.get("applications")
    if not isinstance(applications, Sequence):
        return problems
    for index, app in enumerate(applications):
        if not isinstance(app, Mapping):
            continue
        if app.get("import_path") != RAYFLEET_IMPORT_PATH:
            continue
        args = app.get("args") or {}
        if not isinstance(args, Mapping):
            continue  # Serve's schema has already said args must be a mapping.
        source = f"{where}: applications.{index}.args"
        try:
            spec = parse_spec(args, source=source)
        except ConfigError as error:
            problems.append(str(error))
            continue
        selectors = [f"{source}.{line}" for line in label_selector_problems(spec)]
        if selectors:
            problems.append(_block("label selectors Ray would refuse", selectors))
        if store_check:
            problems.extend(_check_store(spec, source))
    return problems


def _check_store(spec: PlatformSpec, source: str) -> list[str]:
    try:
        store = ModelStore(spec.store)
    except StoreError as error:
        return [f"{source}.store: {error}"]
    lines = []
    for m, model in enumerate(spec.models):
        for v, version in enumerate(model.versions):
            # A triton version lives on a remote server, not in the store.
            if version.triton is not None:
                continue
            try:
                store.manifest(model.name, version.name, version.uri)
            # An unreachable remote store fails inside pyarrow with an OSError.
            except (StoreError, OSError) as error:
                lines.append(f"{source}.models.{m}.versions.{v}: {error}")
    if lines:
        return [_block(f"not in the store {store.uri}", lines)]
    from rayfleet.deployments.app import pool_size_problems, pooled_version_bytes

    sizes = pooled_version_bytes(spec, store)
    too_big = [f"{source}.{line}" for line in pool_size_problems(spec, sizes)]
    return [_block("too big for their pools", too_big)] if too_big else []


def check_cluster_config(config: Any, where: str) -> list[str]:
    """Problems with a ``ray up`` cluster config; ``where`` prefixes field paths.

    The schema is Ray's own ``ray/autoscaler/ray-schema.json``, validated with
    ``jsonschema`` as ``ray up`` does; the head node type and the worker bounds
    are then checked the way ``ray up`` checks them, without its cloud calls.
    """
    import jsonschema

    schema = json.loads(_autoscaler_schema_path().read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    lines = [f"{where}: {_dotted(e.absolute_path)}: {e.message}" for e in errors]
    if not lines and isinstance(config, Mapping):
        lines = _cluster_rules(config, where)
    return [_block("invalid ray up cluster config", lines)] if lines else []


def _cluster_rules(config: Mapping[str, Any], where: str) -> list[str]:
    node_types = config.get("available_node_types")
    if node_types is None:
        return []
    head = config.get("head_node_type")
    if head is None:
        return [f"{where}: head_node_type: required with available_node_types"]
    if head not in node_types:
        return [
            f"{where}: head_node_type: {head!r} is not one of available_node_types "
            f"({', '.join(sorted(node_types))})"
        ]
    max_workers = config.get("max_workers")
    min_sum = sum(node.get("min_workers", 0) for node in node_types.values())
    if max_workers is not None and min_sum > max_workers:
        return [
            f"{where}: max_workers: {max_workers} is less than the min_workers of "
            f"all node types together ({min_sum})"
        ]
    return []


def check_rayservice(
    manifest: Any, where: str, *, store_check: bool = False
) -> list[str]:
    """Problems with a KubeRay ``RayService``: its ``spec.serveConfigV2``, which
    KubeRay hands to Serve as is, is checked as a Serve config."""
    spec = manifest.get("spec") if isinstance(manifest, Mapping) else None
    text = spec.get("serveConfigV2") if isinstance(spec, Mapping) else None
    if not isinstance(text, str):
        return [f"{where}: spec.serveConfigV2: required, a Serve config as a string"]
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        return [f"{where}: spec.serveConfigV2: not YAML: {error}"]
    return check_serve_config(
        config, f"{where}: spec.serveConfigV2", store_check=store_check
    )


def _autoscaler_schema_path() -> Path:
    # find_spec locates the installed package without importing Ray.
    ray = importlib.util.find_spec("ray")
    if ray is None or not ray.submodule_search_locations:
        raise ConfigError("cannot check a cluster config: ray is not installed")
    package = next(iter(ray.submodule_search_locations))
    return Path(package, "autoscaler", "ray-schema.json")


def _block(title: str, lines: typing.Iterable[str]) -> str:
    return f"{title}:\n  " + "\n  ".join(lines)


def _dotted(path: typing.Iterable[object]) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _pydantic_lines(where: str, data: Any, error: ValidationError) -> list[str]:
    """``where: field.path: message`` for each field pydantic found wrong.

    A value that fails every member of a union gets one message per member, and
    pydantic appends the member it tried to the path (``num_replicas.
    constrained-int``). Paths are cut where they go below a scalar in ``data``,
    where only such a tag can be, and the messages for one field are joined.
    """
    messages: dict[str, list[str]] = {}
    for problem in error.errors():
        path = _dotted(_data_path(data, problem["loc"]))
        messages.setdefault(path, []).append(problem["msg"])
    return [f"{where}: {path}: {'; or '.join(m)}" for path, m in messages.items()]


def _data_path(data: Any, loc: tuple[int | str, ...]) -> list[object]:
    path: list[object] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping):
            path.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            path.append(part)
            node = node[part] if 0 <= part < len(node) else None
        elif node is None:
            path.append(part)
        else:
            break
    return path


def _unknown_keys(
    model: type[BaseModel], data: Any, at: tuple[object, ...]
) -> list[tuple[object, ...]]:
    """Paths of keys in ``data`` that ``model`` (recursively) has no field for."""
    if not isinstance(data, Mapping):
        return []
    fields = model.model_fields
    known = set(fields) | {f.alias for f in fields.values() if f.alias}
    found: list[tuple[object, ...]] = []
    for key, value in data.items():
        if key not in known:
            found.append((*at, key))
            continue
        name = next((n for n, f in fields.items() if key in (n, f.alias)), key)
        found.extend(_unknown_below(fields[name].annotation, value, (*at, key)))
    return found


def _unknown_below(
    annotation: Any, value: Any, at: tuple[object, ...]
) -> list[tuple[object, ...]]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        # A union with a plain dict accepts any keys (Serve converts it later).
        if any(
            member is dict or typing.get_origin(member) is dict for member in members
        ):
            return []
        return [
            path for member in members for path in _unknown_below(member, value, at)
        ]
    if origin in (list, tuple, Sequence) and isinstance(value, list):
        (member, *_) = typing.get_args(annotation) or (Any,)
        return [
            path
            for index, item in enumerate(value)
            for path in _unknown_below(member, item, (*at, index))
        ]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _unknown_keys(annotation, value, at)
    return []
