"""Where the controller keeps each model's rollout between restarts.

In production the model store's ``_state/`` folder is the store
(:class:`~rayfleet.platform.config.store.ModelStore` has both methods);
:class:`MemoryStateStore` keeps documents in a dict, for tests and for tools that
drive a :class:`~rayfleet.platform.rollout.controller.ValidatorCore` in one
process.
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


class MemoryStateStore:
    """A :class:`StateStore` in a dict, holding copies.

    Documents are deep-copied on the way in and out, as a real store's JSON round
    trip would: a caller that changes what it wrote or read changes nothing here.
    """

    def __init__(self) -> None:
        self._documents: dict[str, dict[str, Any]] = {}

    def read_state(self, key: str) -> dict[str, Any] | None:
        """The document saved under ``key``, or None."""
        document = self._documents.get(key)
        return None if document is None else copy.deepcopy(document)

    def write_state(self, key: str, state: Mapping[str, Any]) -> None:
        """Replace the document under ``key``."""
        self._documents[key] = copy.deepcopy(dict(state))

    def keys(self) -> list[str]:
        """The keys written so far, sorted."""
        return sorted(self._documents)
