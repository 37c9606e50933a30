"""Fixed numbers of the platform, in one place.

What a user may want to change is a spec field instead (:mod:`.config.spec`); what
stays here is either a protocol fact or a choice whose reason is written beside it.
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["PACKAGE_VERSION"]

# The installed distribution's version, so `GET /v2`, `rayfleet --version` and the
# package metadata never disagree.
PACKAGE_VERSION: str = metadata.version("rayfleet")
