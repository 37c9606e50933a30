"""Reading a Serve config from the command line: the whole file for ``rayfleet up``,
or only the model store of its rayfleet application for the store commands.

An application is rayfleet's when its ``import_path`` is
``rayfleet.deployments.app:build``; Serve names an application without ``name``
``default``, and so does this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rayfleet.cli.check import RAYFLEET_IMPORT_PATH
from rayfleet.platform.config.spec import parse_spec
from rayfleet.platform.errors import ConfigError

__all__ = ["load_serve_config", "store_of_config"]

_DEFAULT_APP_NAME = "default"


def load_serve_config(path: str) -> dict[str, Any]:
    """Read a Serve config file and check the rayfleet spec of each application."""
    config = _read_config(path)
    for index, app in enumerate(config["applications"]):
        parse_spec(app.get("args") or {}, source=f"{path}: applications.{index}.args")
    return config


def store_of_config(path: str, app: str | None = None) -> str:
    """``args.store`` of the rayfleet application in the Serve config at ``path``.

    ``app`` names the application; it may be left out when the config has only
    one rayfleet application. The store is returned as written: a relative path
    is taken from the current directory, as ``rayfleet check --store-check`` does.
    Raises :class:`ConfigError` naming the file for anything it cannot answer.
    """
    ours = _rayfleet_applications(_read_config(path))
    if not ours:
        raise ConfigError(f"{path}: no application imports {RAYFLEET_IMPORT_PATH}")
    names = ", ".join(name for name, _, _ in ours)
    if app is not None:
        chosen = [entry for entry in ours if entry[0] == app]
        if not chosen:
            raise ConfigError(
                f"{path}: no rayfleet application named {app!r}; it has: {names}"
            )
    elif len(ours) > 1:
        raise ConfigError(
            f"{path}: {len(ours)} rayfleet applications ({names}); "
            "pick one with --app NAME"
        )
    else:
        chosen = ours
    _, index, args = chosen[0]
    store = args.get("store")
    if not isinstance(store, str) or not store:
        raise ConfigError(
            f"{path}: applications.{index}.args.store: required, the model store URI"
        )
    return store


def _read_config(path: str) -> dict[str, Any]:
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    if not isinstance(config, dict) or not config.get("applications"):
        raise ConfigError(f"{path}: expected a Serve config with 'applications'")
    return config


def _rayfleet_applications(
    config: Mapping[str, Any],
) -> list[tuple[str, int, Mapping[str, Any]]]:
    """``(name, index, args)`` of each rayfleet application, in file order."""
    found = []
    for index, app in enumerate(config["applications"]):
        if not isinstance(app, Mapping):
            continue
        if app.get("import_path") != RAYFLEET_IMPORT_PATH:
            continue
        args = app.get("args") or {}
        name = str(app.get("name", _DEFAULT_APP_NAME))
        found.append((name, index, args if isinstance(args, Mapping) else {}))
    return found
