"""``rayfleet rollout``: the admin API of a running rayfleet, from a terminal.

A thin client over ``GET /-/rollouts`` and ``POST /-/rollouts/{model}/{action}``.
The bearer token comes from the environment variable the server reads
(``RAYFLEET_ADMIN_TOKEN`` by default), never from the command line, so it stays out
of shell history and process listings.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from rayfleet.platform.errors import ConfigError

__all__ = ["ACTIONS", "rollout_request"]

ACTIONS = ("promote", "rollback", "pause", "resume", "weights")


def rollout_request(
    url: str,
    model: str | None,
    action: str | None,
    *,
    weight: float | None = None,
    token_env: str = "RAYFLEET_ADMIN_TOKEN",
    timeout_s: float = 10.0,
) -> tuple[int, dict[str, Any]]:
    """``(status, JSON body)`` of one admin call; ``action=None`` reads the status.

    Raises :class:`ConfigError` when the server cannot be reached or an action is
    asked for without a token in ``token_env``.
    """
    base = url.rstrip("/")
    headers = {"accept": "application/json"}
    data = None
    if action is None:
        request = urllib.request.Request(f"{base}/-/rollouts", headers=headers)
    else:
        if action not in ACTIONS:
            raise ConfigError(f"unknown action {action!r}; one of {list(ACTIONS)}")
        token = os.environ.get(token_env)
        if not token:
            raise ConfigError(f"set {token_env} to the server's admin token")
        headers["authorization"] = f"Bearer {token}"
        if action == "weights":
            if weight is None:
                raise ConfigError("weights needs --weight, a percent of traffic")
            headers["content-type"] = "application/json"
            data = json.dumps({"weight": weight}).encode()
        request = urllib.request.Request(
            f"{base}/-/rollouts/{model}/{action}",
            data=data or b"",
            headers=headers,
            method="POST",
        )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body)
        except ValueError:
            return error.code, {"error": body.decode(errors="replace")}
    except (urllib.error.URLError, OSError) as error:
        raise ConfigError(f"cannot reach {base}: {error}") from error
