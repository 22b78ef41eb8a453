"""The package's layout rules, checked on its source: who reads the environment."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import nosana_magic

PACKAGE = Path(nosana_magic.__file__).parent

#: Where the environment may be read: the settings, and the devnode's own world (what its
#: ops' child processes inherit). Keyed by module, then function (``""``: module level).
ENVIRONMENT_READERS = {
    "nosana_magic.settings": {"reference_env", "Settings.from_env", "Settings.read_wallet_secret",
                              "Settings.read_pinata_jwt", "credentials_file", "find_pinata_jwt",
                              "looks_like_path"},
    "nosana_magic.devnode.executor": {"Executor._env"},
}

_ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def modules() -> Iterator[tuple[str, ast.Module]]:
    """Every module of the package: its dotted name and its syntax tree."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def qualified_nodes(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """Every node with the qualified name of the function (or class) it sits in."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}.{child.name}" if prefix else child.name
            yield name, child
            yield from qualified_nodes(child, name)
        else:
            yield prefix, child
            yield from qualified_nodes(child, prefix)


def environment_reads(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """``(function, line)`` of every ``os.environ``/``os.getenv``/… and ``from os import …``."""
    for where, node in qualified_nodes(tree):
        attribute = (isinstance(node, ast.Attribute) and node.attr in _ENV_NAMES
                     and isinstance(node.value, ast.Name) and node.value.id == "os")
        imported = (isinstance(node, ast.ImportFrom) and node.module == "os"
                    and any(alias.name in _ENV_NAMES for alias in node.names))
        if attribute or imported:
            yield where, node.lineno


def test_only_the_settings_read_the_environment() -> None:
    found = {}
    for module, tree in modules():
        allowed = ENVIRONMENT_READERS.get(module, set())
        for where, line in environment_reads(tree):
            if where not in allowed:
                found[f"{module}:{line}"] = where or "<module>"
    assert found == {}, "read the environment through nosana_magic.settings"


def test_the_environment_check_sees_reads() -> None:
    # The check above would pass on a package that hides its reads from it: it must not.
    tree = ast.parse("import os\nA = os.environ\ndef f():\n    return os.getenv('X')\n"
                     "from os import environ\n")
    assert sorted(environment_reads(tree)) == [("", 2), ("", 5), ("f", 4)]
    settings_reads = {where for where, _ in environment_reads(
        dict(modules())["nosana_magic.settings"])}
    assert settings_reads and settings_reads <= ENVIRONMENT_READERS["nosana_magic.settings"]
