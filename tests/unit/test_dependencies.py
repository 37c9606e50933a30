"""Every package rayfleet and its tests import is one pyproject.toml declares.

A package that arrives only because another one depends on it (aiohttp through
Ray, grpcio through tritonclient) goes away the day that one stops needing it,
and rayfleet breaks on an install that pip called good. The test parses every
module, maps each import to the distributions that provide it, and fails on an
import whose distributions pyproject.toml does not name:

- what ``rayfleet`` imports when a module is loaded: a runtime dependency;
- what it imports inside a function: runtime, or an extra (the demo's
  scikit-learn, which it says needs ``dev``);
- what ``tests`` import: runtime or ``dev``.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = frozenset({"rayfleet", "tests", "loadtest"})


def _normal(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, frozenset[str]]:
    """Runtime dependencies under ``""``, and each extra under its name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}

    def names(requirements: list[str]) -> frozenset[str]:
        found = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r) for r in requirements)
        return frozenset(_normal(m.group()) for m in found if m)

    return {group: names(requirements) for group, requirements in groups.items()}


DECLARED = _declared()


def _imports(tree: ast.AST, in_function: bool = False) -> Iterator[tuple[str, bool]]:
    """Each absolute import under ``tree``: the module, and whether it runs only
    when a function is called."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, in_function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, in_function
        nested = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _imports(node, in_function or nested)


@cache
def _packages() -> dict[str, list[str]]:
    """Top-level import name -> the distributions installing it (slow to build)."""
    return dict(metadata.packages_distributions())


@cache
def _providers(module: str) -> frozenset[str]:
    """The installed distributions that provide ``module``.

    A namespace package (``google``) is shared by several: the ones holding the
    module's own files are the providers.
    """
    top = module.split(".")[0]
    candidates = _packages().get(top, [])
    if len(set(candidates)) > 1:
        prefix = module.replace(".", "/")
        holding = [
            name
            for name in candidates
            if any(
                str(file).startswith(prefix + "/") or str(file) == prefix + ".py"
                for file in metadata.files(name) or ()
            )
        ]
        candidates = holding or candidates
    return frozenset(_normal(name) for name in candidates)


def _undeclared(folder: str, allowed: dict[bool, frozenset[str]]) -> list[str]:
    """``path: module`` for each import of ``folder`` no allowed distribution
    provides; ``allowed[True]`` for imports inside functions, ``[False]`` else."""
    problems = []
    for source in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for module, in_function in _imports(tree):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in FIRST_PARTY:
                continue
            providers = _providers(module)
            if not providers & allowed[in_function]:
                where = source.relative_to(ROOT)
                problems.append(f"{where}: {module} (from {sorted(providers)})")
    return sorted(set(problems))


def test_rayfleet_imports_only_what_it_declares() -> None:
    runtime = DECLARED[""]
    extras = frozenset().union(*DECLARED.values())
    assert _undeclared("rayfleet", {False: runtime, True: extras}) == []


def test_the_tests_import_only_what_is_declared() -> None:
    allowed = DECLARED[""] | DECLARED["dev"]
    assert _undeclared("tests", {False: allowed, True: allowed}) == []


def test_a_namespace_package_resolves_to_its_own_distribution() -> None:
    assert _providers("google.protobuf.message") == {"protobuf"}
    assert _providers("grpc") == {"grpcio"}
    assert _providers("yaml") == {"pyyaml"}
    assert _providers("no_such_module_anywhere") == frozenset()


def test_an_import_inside_a_function_is_told_apart() -> None:
    tree = ast.parse(
        "import a\n"
        "if x:\n    from b.c import d\n"
        "class K:\n    import e\n"
        "def f():\n    import g\n    def h():\n        from i import j\n"
        "async def k():\n    import m\n"
        "from . import n\n"
    )
    assert list(_imports(tree)) == [
        ("a", False),
        ("b.c", False),
        ("e", False),
        ("g", True),
        ("i", True),
        ("m", True),
    ]
