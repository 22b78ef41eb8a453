"""The package's layout rules, checked on its source: who reads the environment, where it
sleeps, which way imports run, and how long its functions, classes and modules are."""

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
                              "Settings.read_pinata_jwt", "Settings.read_api_key",
                              "credentials_file", "find_pinata_jwt", "find_api_key",
                              "looks_like_path", "service_environment"},
    "nosana_magic.devnode.executor": {"_Sandbox.env"},
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


# --------------------------------------------------------------------------- sleeps

#: Every sleep in the package that is not the retry policy's, by module and function: polls at
#: a fixed pace, the devnode's emulated timings, the demo's and the job's short waits. None
#: of them follows a failure; every "try again" sleeps in ``transport.Backoff.wait``.
PACED_SLEEPS = {
    "nosana_magic.transport": {"Backoff.wait"},  # the retry policy itself
    "nosana_magic.network.api": {"ApiNetwork.watch"},  # the ledger poll's pace
    "nosana_magic.machine": {"HostStreams.drain_logs"},  # the end-of-job log drain's idle check
    "nosana_magic.devnode.app": {"DevNode.wait_job", "DevNode._serve",
                                 "DevNode._watch_idle"},  # the idle check's pace
    "nosana_magic.devnode.monitor": {"LoopLag.run"},  # the lag probe is a paced sleep
    "nosana_magic.devnode.runtime": {"start_lock"},  # a non-blocking lock, tried in a bound
    "nosana_magic.network.local": {"stop_local_service"},  # until the service's pid is gone
    "nosana_magic.devnode.host": {"EmulatedHost._quit_after"},  # a fault: quit after N s
    "nosana_magic.devnode.ledger": {"_after_listing"},  # a fault: a listing's answer comes late
    "nosana_magic.devnode.node_api": {"NodeApi._sleep", "NodeApi._info_events"},
    "nosana_magic.devnode.services": {"ServiceRegistry._health_loop"},  # health checks
}


def sleeps(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """``(function, line)`` of every ``asyncio.sleep(…)``/``time.sleep(…)`` call."""
    for where, node in qualified_nodes(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "sleep" and isinstance(node.func.value, ast.Name)
                and node.func.value.id in ("asyncio", "time", "anyio", "trio")):
            yield where, node.lineno


def test_every_retry_sleeps_in_the_one_retry_policy() -> None:
    found = {}
    for module, tree in modules():
        for where, line in sleeps(tree):
            if where not in PACED_SLEEPS.get(module, set()):
                found[f"{module}:{line}"] = where or "<module>"
    assert found == {}, (
        "a new sleep: a retry loop must run on transport.Backoff; a fixed-pace wait is listed "
        "in PACED_SLEEPS with why")
    seen = {(module, where) for module, tree in modules() for where, _ in sleeps(tree)}
    listed = {(module, where) for module, names in PACED_SLEEPS.items() for where in names}
    assert listed <= seen, f"listed but gone: {sorted(listed - seen)}"


def test_the_sleep_check_sees_sleeps() -> None:
    tree = ast.parse("import asyncio, time\nclass A:\n    async def f(self):\n"
                     "        await asyncio.sleep(1)\n        time.sleep(2)\n")
    assert sorted(sleeps(tree)) == [("A.f", 4), ("A.f", 5)]


# --------------------------------------------------------------------------- imports


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that runs (at module level or in a function), not those for type checkers."""
    for child in ast.iter_child_nodes(tree):
        if _is_type_checking(child):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _runtime_imports(child)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports when it runs."""
    names = {name for name, _ in modules()}
    packages = {name for name in names
                if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file()}
    graph: dict[str, set[str]] = {}
    for module, tree in modules():
        here = module if module in packages else module.rpartition(".")[0]
        targets = graph.setdefault(module, set())
        for node in _runtime_imports(tree):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name in names}
                continue
            base = here
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = f"{base}.{node.module}" if node.level and node.module else (
                base if node.level else node.module or "")
            for alias in node.names:
                target = f"{source}.{alias.name}"
                targets.add(target if target in names else source)
        targets &= names
        targets.discard(module)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_imports_run_one_way() -> None:
    graph = import_graph()
    devnode = "nosana_magic.devnode"
    up = {(a, b) for a, targets in graph.items() if a.startswith(devnode)
          for b in targets if b.startswith("nosana_magic.network")}
    assert up == set(), "the devnode sits below the networks: import from protocol instead"
    starters = {a for a, targets in graph.items() if not a.startswith(devnode)
                and any(b.startswith(devnode) for b in targets)}
    assert starters == {"nosana_magic.network.local"}, "only network/local.py starts a devnode"
    assert graph["nosana_magic.transport"] == set(), "transport is the bottom layer"
    assert graph["nosana_magic.errors"] == set()
    assert _cycle(graph) is None, f"an import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_the_import_graph_is_read_right() -> None:
    graph = import_graph()
    assert {"nosana_magic.transport", "nosana_magic.errors"} <= graph["nosana_magic.host"]
    assert "nosana_magic.runner" in graph["nosana_magic.job"]  # ``from . import runner``
    assert "nosana_magic.devnode.config" in graph["nosana_magic.network.local"]  # in a function
    assert "nosana_magic.job" not in graph["nosana_magic.errors"]  # only for type checkers
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


# --------------------------------------------------------------------------- sizes

MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 600
#: The handle's module: what a user reads to learn the handle.
MAX_HANDLE_MODULE_LINES = 700

#: Definitions allowed over the bounds, each with its reason (none today).
KNOWN_LARGE: set[str] = set()


def _walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST, int]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{child.name}"
            assert child.end_lineno is not None
            yield name, child, child.end_lineno - child.lineno + 1
            yield from _walk(child, f"{name}.")
        else:
            yield from _walk(child, prefix)


def _definitions() -> Iterator[tuple[str, ast.AST, int]]:
    """``(file:qualified name, node, lines)`` for every class and function of the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        for name, node, lines in _walk(ast.parse(path.read_text(encoding="utf-8")), ""):
            yield f"{where}:{name}", node, lines


def test_no_function_over_80_lines_and_no_class_over_600() -> None:
    too_long = sorted(
        f"{name} ({lines} lines)" for name, node, lines in _definitions()
        if name not in KNOWN_LARGE and lines > (
            MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES)
    )
    assert not too_long, too_long
    # The exceptions are real (a fixed one must leave the list).
    sizes = {name: lines for name, _, lines in _definitions()}
    assert all(sizes.get(name, 0) > MAX_FUNCTION_LINES for name in KNOWN_LARGE)


def test_the_handle_s_module_is_readable_in_one_sitting() -> None:
    lines = len((PACKAGE / "job.py").read_text(encoding="utf-8").splitlines())
    assert lines < MAX_HANDLE_MODULE_LINES, lines


def test_the_layers_below_the_handle_never_import_it() -> None:
    """display -> job -> machine -> record -> outcome: no layer imports one above it, not
    even for type checking."""
    above = {"outcome.py": {"record", "machine", "job", "display", "magics"},
             "record.py": {"machine", "job", "display", "magics"},
             "machine.py": {"job", "display", "magics"},
             "job.py": {"display", "magics"}}
    for module, forbidden in above.items():
        tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module and node.level == 1}
        assert not imported & forbidden, (module, imported & forbidden)
