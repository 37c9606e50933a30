"""``rayfleet rollout``: the admin API of a running rayfleet, from a terminal.

A thin client over ``GET /-/rollouts``, ``GET /-/rollouts/{model}/history`` and
``POST /-/rollouts/{model}/{action}``. The bearer token comes from the environment
variable the server reads (``RAYFLEET_ADMIN_TOKEN`` by default), never from the
command line, so it stays out of shell history and process listings. Actions say
who sends them (``X-Rayfleet-Actor: $USER@host``) for the rollout's history.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rayfleet.platform.errors import ConfigError
from rayfleet.platform.rollout.history import ACTOR_HEADER, sanitise

__all__ = ["ACTIONS", "actor", "history_request", "rollout_request"]

ACTIONS = ("promote", "rollback", "pause", "resume", "weights")

# The server's admin token is named by its spec's admin_token_env; this is that
# field's default.
TOKEN_ENV = "RAYFLEET_ADMIN_TOKEN"
# A person waits on each call; the router gives up on the Validator after 10 s.
TIMEOUT_S = 10.0


def actor() -> str:
    """``$USER@hostname``: who this terminal says it is, for the server's record.

    Only latin-1 crosses as a header value; anything else becomes ``?``, and
    control characters are dropped, as the server would drop them.
    """
    try:
        user = os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no login name at all, e.g. an unnamed container uid
        user = "unknown"
    text = sanitise(f"{user}@{socket.gethostname()}")
    return text.encode("latin-1", errors="replace").decode("latin-1")


def rollout_request(
    url: str,
    model: str | None,
    action: str | None,
    *,
    weight: float | None = None,
    token_env: str = TOKEN_ENV,
    timeout_s: float = TIMEOUT_S,
) -> tuple[int, Any]:
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
        headers[ACTOR_HEADER] = actor()
        if action == "weights":
            if weight is None:
                raise ConfigError("weights needs --weight, a percent of traffic")
            headers["content-type"] = "application/json"
            data = json.dumps({"weight": weight}).encode()
        request = urllib.request.Request(
            f"{base}/-/rollouts/{_quoted(model)}/{action}",
            data=data or b"",
            headers=headers,
            method="POST",
        )
    return _send(request, base, timeout_s)


def history_request(
    url: str,
    model: str,
    limit: int | None = None,
    *,
    token_env: str = TOKEN_ENV,
    timeout_s: float = TIMEOUT_S,
) -> tuple[int, Any]:
    """``(status, JSON body)`` of ``GET /-/rollouts/{model}/history``.

    The route needs no token; one in ``token_env`` is sent when set, and the
    server then shows who took each operator action.
    """
    base = url.rstrip("/")
    headers = {"accept": "application/json"}
    token = os.environ.get(token_env)
    if token:
        headers["authorization"] = f"Bearer {token}"
    query = "" if limit is None else f"?limit={limit}"
    request = urllib.request.Request(
        f"{base}/-/rollouts/{_quoted(model)}/history{query}", headers=headers
    )
    return _send(request, base, timeout_s)


def _quoted(model: str | None) -> str:
    # A model name is one path segment, whatever it holds.
    return urllib.parse.quote(model or "", safe="")


def _send(
    request: urllib.request.Request, base: str, timeout_s: float
) -> tuple[int, Any]:
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
    except ValueError as error:
        raise ConfigError(f"{base} did not answer JSON: {error}") from error
