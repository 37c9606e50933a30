"""Files and folders on any pyarrow filesystem, named by URI or local path.

The model store and batch jobs both address ``s3://``, ``gs://`` and local paths
this way, so a URI means the same thing to ``rayfleet push`` and ``rayfleet batch``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from rayfleet.platform.errors import ConfigError

__all__ = ["Location"]


@dataclass(frozen=True)
class Location:
    """A file or folder on a pyarrow filesystem, and its URI.

    Filesystem options in a URI's query (``?endpoint_override=...``) stay on
    every location derived from it.
    """

    fs: pafs.FileSystem
    path: str
    base: str
    query: str = ""

    @classmethod
    def parse(cls, uri: str) -> Location:
        """The location a URI or a local path names.

        Raises pyarrow's ``ValueError`` or ``OSError`` when no filesystem takes
        the URI, for callers that word that failure themselves; see :meth:`of`.
        """
        if "://" not in uri:
            path = str(Path(uri).expanduser().resolve())
            return cls(pafs.LocalFileSystem(), path, path)
        fs, path = pafs.FileSystem.from_uri(uri)
        base, mark, query = uri.partition("?")
        return cls(fs, path.rstrip("/"), base.rstrip("/"), mark + query)

    @classmethod
    def of(cls, uri: str) -> Location:
        """The location a URI or a local path names.

        Raises :class:`ConfigError` when no filesystem takes the URI.
        """
        try:
            return cls.parse(uri)
        except (ValueError, OSError) as error:
            raise ConfigError(f"cannot open {uri!r}: {error}") from error

    @property
    def uri(self) -> str:
        """The URI, filesystem options included."""
        return self.base + self.query

    @property
    def name(self) -> str:
        """The last part of the path."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def is_local(self) -> bool:
        """Whether this is on the local filesystem, where a rename is atomic."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    def child(self, name: str) -> Location:
        """``name`` inside this folder; ``name`` may hold ``/``."""
        return Location(
            self.fs, f"{self.path}/{name}", f"{self.base}/{name}", self.query
        )

    def sibling(self, name: str) -> Location:
        """``name`` beside this file or folder."""
        path, base = self.path.rsplit("/", 1)[0], self.base.rsplit("/", 1)[0]
        return Location(self.fs, f"{path}/{name}", f"{base}/{name}", self.query)

    def exists(self) -> bool:
        """Whether anything is there."""
        return bool(self.fs.get_file_info(self.path).type != pafs.FileType.NotFound)

    def remove(self) -> None:
        """Delete the file or folder, if there is one."""
        kind = self.fs.get_file_info(self.path).type
        if kind == pafs.FileType.Directory:
            self.fs.delete_dir(self.path)
        elif kind != pafs.FileType.NotFound:
            self.fs.delete_file(self.path)

    def files(self) -> list[Location]:
        """The files directly in this folder, sorted; none when it is missing."""
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return [
            self.child(info.base_name)
            for info in sorted(infos, key=lambda info: info.base_name)
            if info.type == pafs.FileType.File
        ]

    def staging(self) -> Location:
        """A new, hidden sibling to build this in before it is moved here."""
        return self.sibling(f".{self.name}.rayfleet-{uuid.uuid4().hex[:12]}")
