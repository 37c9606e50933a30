"""Where the controller keeps each model's rollout, and its history, between restarts.

In production the model store is the store
(:class:`~rayfleet.platform.config.store.ModelStore` has every method): its
``_state/`` folder holds the current rollout, replaced whole on each change, and its
``_history/`` folder the append-only record of every change.
:class:`MemoryStateStore` keeps both in dicts, for tests and for tools that drive a
:class:`~rayfleet.platform.rollout.controller.ValidatorCore` in one process.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["MemoryStateStore", "StateStore"]


class StateStore(Protocol):
    """Where rollout state lives: the model store's ``_state/`` in production."""

    def read_state(self, key: str) -> dict[str, Any] | None:
        """The document saved under ``key``, or None."""
        ...

    def write_state(self, key: str, state: Mapping[str, Any]) -> None:
        """Replace the document under ``key``."""
        ...

    def append_history(self, key: str, entry: Mapping[str, Any]) -> None:
        """Add ``entry`` after every entry appended under ``key`` so far."""
        ...

    def read_history(self, key: str, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` (at least 1) entries under ``key``, oldest first."""
        ...


class MemoryStateStore:
    """A :class:`StateStore` in dicts, holding copies.

    Documents are deep-copied on the way in and out, as a real store's JSON round
    trip would: a caller that changes what it wrote or read changes nothing here.
    """

    def __init__(self) -> None:
        self._documents: dict[str, dict[str, Any]] = {}
        self._history: dict[str, list[dict[str, Any]]] = {}

    def read_state(self, key: str) -> dict[str, Any] | None:
        """The document saved under ``key``, or None."""
        document = self._documents.get(key)
        return None if document is None else copy.deepcopy(document)

    def write_state(self, key: str, state: Mapping[str, Any]) -> None:
        """Replace the document under ``key``."""
        self._documents[key] = copy.deepcopy(dict(state))

    def append_history(self, key: str, entry: Mapping[str, Any]) -> None:
        """Add ``entry`` after every entry appended under ``key`` so far."""
        self._history.setdefault(key, []).append(copy.deepcopy(dict(entry)))

    def read_history(self, key: str, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` (at least 1) entries under ``key``, oldest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1: {limit}")
        return copy.deepcopy(self._history.get(key, [])[-limit:])

    def keys(self) -> list[str]:
        """The keys with a saved state document, sorted."""
        return sorted(self._documents)
