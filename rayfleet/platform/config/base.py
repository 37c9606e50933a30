"""The one base of every rayfleet spec: frozen, strict, and kind to renamed keys.

A spec is read from a Serve config that a person wrote, so a misspelt key must be
an error with its field path (``extra="forbid"``), never a silently ignored
setting; and a parsed spec is shared by many components, so none may change it
(``frozen=True``).

A spec that renames a key lists the old name in ``RENAMED_KEYS``: for one release
the old key is still read as the new one, with a :class:`FutureWarning` (shown by
default, also by ``rayfleet check``) and a logged warning (what ``serve deploy``
leaves in the Serve logs). A spec giving both names is refused.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["REMOVED_IN", "Spec"]

logger = logging.getLogger(__name__)

# The release that stops reading renamed keys: they were renamed in 0.2.0.
REMOVED_IN = "0.3.0"

# (spec, old key) already logged: the log says it once per process, however many
# times a config is parsed; warnings.warn has its own once-per-place filter.
_logged: set[tuple[str, str]] = set()


class Spec(BaseModel):
    """A frozen pydantic model that refuses keys it does not declare."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Old key -> new key, read with a deprecation warning until REMOVED_IN.
    RENAMED_KEYS: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if not cls.RENAMED_KEYS or not isinstance(data, Mapping):
            return data
        given = dict(data)
        for old, new in cls.RENAMED_KEYS.items():
            if old not in given:
                continue
            if new in given:
                raise ValueError(
                    f"'{old}' is the old name of '{new}': give only '{new}'"
                )
            given[new] = given.pop(old)
            _warn_renamed(cls.__name__, old, new)
        return given


def _warn_renamed(spec: str, old: str, new: str) -> None:
    message = (
        f"rayfleet spec key '{old}' ({spec}) is now '{new}'; '{old}' is read "
        f"until rayfleet {REMOVED_IN}, which drops it"
    )
    warnings.warn(message, FutureWarning, stacklevel=2)
    if (spec, old) not in _logged:
        _logged.add((spec, old))
        logger.warning(message)
