"""ARCHITECTURE.md is the map, and the code keeps to it.

The folder table in ARCHITECTURE.md is the rule: each folder may import only the
rayfleet folders (and the outside packages named in its row) that the row lists. The
test reads the table, parses every module of the package (function-level imports
included, since a lazy ``import ray`` inside the core is still a dependency), and
fails on any import the table does not allow, on a folder the table names that no
longer exists, and on a file path in the document that is gone.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "rayfleet"
DOC = ROOT / "ARCHITECTURE.md"

# Outside packages whose use a row must declare: the ones that decide where code can
# run (Ray), or that tie code to a transport (Starlette, grpc).
GUARDED = ("ray", "starlette", "grpc")


@dataclass(frozen=True)
class Row:
    """One line of the folder table: a folder and what it may import."""

    folder: str
    may_import: frozenset[str]


def _rows() -> list[Row]:
    table = DOC.read_text(encoding="utf-8").split("<!-- folders -->")[1]
    rows = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`rayfleet"):
            continue
        allowed = frozenset(re.findall(r"`([a-z_./]+)`", cells[2]))
        rows.append(Row(cells[0].strip("`").rstrip("/"), allowed))
    return rows


ROWS = _rows()


def _folder_of(path: str) -> str:
    """The most specific folder row that holds a module path like rayfleet/x/y.py."""
    best = ""
    for row in ROWS:
        if (path == row.folder or path.startswith(row.folder + "/")) and len(
            row.folder
        ) > len(best):
            best = row.folder
    return best


def _module_path(module: str) -> str:
    """rayfleet.platform.config.spec -> rayfleet/platform/config/spec.py, or the
    package folder when the module is a package."""
    path = module.replace(".", "/")
    if (ROOT / path).is_dir():
        return path
    return path + ".py"


def _imports(source: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            # `from rayfleet.platform import rollout` names a module too.
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if (ROOT / full.replace(".", "/")).exists() or (
                    ROOT / (full.replace(".", "/") + ".py")
                ).exists():
                    yield node.lineno, full


def _allows(row: Row, target: str) -> bool:
    return any(
        target == allowed.rstrip("/") or target.startswith(allowed.rstrip("/") + "/")
        for allowed in row.may_import
    )


def test_the_table_covers_every_folder_of_the_package() -> None:
    folders = {
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*")
        if path.is_dir() and (path / "__init__.py").exists()
    }
    assert folders <= {row.folder for row in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.folder)
def test_every_folder_in_the_table_exists(row: Row) -> None:
    assert (ROOT / row.folder).exists(), f"ARCHITECTURE.md names {row.folder}"


def test_every_path_the_document_names_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    paths = r"`((?:rayfleet|tests|loadtest|configs|deploy)/[^`*]+)`"
    named = set(re.findall(paths, text))
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"ARCHITECTURE.md names paths that are gone: {missing}"


def _violations() -> Iterator[str]:
    for source in sorted(PACKAGE.rglob("*.py")):
        path = str(source.relative_to(ROOT))
        row = next(r for r in ROWS if r.folder == _folder_of(path))
        for line, module in _imports(source):
            top = module.split(".")[0]
            if top == "rayfleet":
                target = _module_path(module)
                if _folder_of(target) in ("", row.folder) or target == "rayfleet":
                    continue
                if not _allows(row, target):
                    yield f"{path}:{line} imports {module}"
            elif top in GUARDED and top not in row.may_import:
                yield f"{path}:{line} imports {module}"


def test_every_import_is_one_the_table_allows() -> None:
    assert list(_violations()) == []


def test_the_core_imports_no_ray_at_all() -> None:
    # Stated on its own: this is the invariant the rest of the design leans on.
    ray_in_core = [
        f"{source.relative_to(ROOT)}:{line}"
        for source in (PACKAGE / "platform").rglob("*.py")
        for line, module in _imports(source)
        if module.split(".")[0] == "ray"
    ]
    assert ray_in_core == []
