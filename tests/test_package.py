"""The public face: what ``nosana_magic`` exports, that importing it stays light, the errors."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import nosana_magic
from nosana_magic import errors

#: Errors of the pure layers that the client turns into the exported ones before a user sees
#: them (the errors module's docstring says so).
INTERNAL_ERRORS = {"AuthError", "CidError", "DurationError", "AccountDecodeError",
                   "InstructionArgError", "InstructionDecodeError"}


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def _import_the_package() -> None:
    for info in pkgutil.walk_packages(nosana_magic.__path__, "nosana_magic."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def test_every_exported_name_resolves() -> None:
    assert nosana_magic.__all__ == sorted(nosana_magic.__all__)
    assert set(nosana_magic.__all__) == {*nosana_magic._EXPORTS, "load_ipython_extension",
                                         "unload_ipython_extension"}
    for name in nosana_magic.__all__:
        value = getattr(nosana_magic, name)
        assert getattr(value, "__name__", name) == name
        module = nosana_magic._EXPORTS.get(name)
        if module is not None:
            assert value is getattr(importlib.import_module(f"nosana_magic.{module}"), name)
    namespace: dict[str, object] = {}
    exec("from nosana_magic import *", namespace)
    assert set(nosana_magic.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'Redactor'"):
        nosana_magic.Redactor  # noqa: B018 - an internal, no longer exported


def test_every_error_a_user_can_catch_is_exported_and_in_the_tree() -> None:
    _import_the_package()
    user_facing = {cls for cls in _all_subclasses(errors.NosanaError)
                   if not cls.__name__.startswith("_") and cls.__name__ not in INTERNAL_ERRORS}
    user_facing |= {errors.NosanaError, errors.MissingResult, errors.JobInterrupted}
    names = {cls.__name__ for cls in user_facing}
    assert {"JobFailed", "JobStopped", "HostError", "NetworkError", "SettingsError",
            "SpendNotConfirmed", "InsufficientFundsError"} <= names
    assert names <= set(nosana_magic.__all__)
    for cls in user_facing:
        assert cls.__module__ == "nosana_magic.errors", f"{cls.__name__}: define it in errors.py"
        assert getattr(nosana_magic, cls.__name__) is cls
        assert f" {cls.__name__} " in errors.__doc__, f"{cls.__name__} is not in the tree"
    # The internal ones really are internal: none is exported.
    assert not INTERNAL_ERRORS & set(nosana_magic.__all__)


def test_errors_are_re_exported_where_they_are_raised() -> None:
    from nosana_magic.host import HostError
    from nosana_magic.job import JobFailed, JobInterrupted
    from nosana_magic.network.solana import InsufficientFundsError

    assert HostError is errors.HostError and JobFailed is errors.JobFailed
    assert JobInterrupted is errors.JobInterrupted
    assert InsufficientFundsError is errors.InsufficientFundsError


def test_importing_the_package_loads_no_job_machinery() -> None:
    # ``%load_ext`` must stay fast: the names above are imported on first use.
    code = ("import sys, nosana_magic, nosana_magic.errors\n"
            "heavy = {'nosana_magic.job', 'nosana_magic.network', 'solana', 'httpx', 'pydantic'}\n"
            "print(sorted(heavy & set(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_the_solana_modules_leave_logging_alone_until_used() -> None:
    code = ("import logging, nosana_magic.network.rpc as r, nosana_magic.network.solana as s\n"
            "print([len(logging.getLogger(n).filters) for n in r._LOGGERS_WITH_URLS])\n"
            "from solders.keypair import Keypair\n"
            "from nosana_magic.wallet import Wallet\n"
            "s.SolanaNetwork(Wallet(Keypair()), rpc_url='https://rpc.example/?api-key=K')\n"
            "print([len(logging.getLogger(n).filters) for n in r._LOGGERS_WITH_URLS])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.split("\n")[:2] == ["[0, 0]", "[1, 1]"]


def test_type_checkers_see_every_export() -> None:
    # ``__getattr__`` is invisible to mypy and IDEs; the TYPE_CHECKING block names the same
    # objects, from the same modules, so ``from nosana_magic import run_confidential`` is typed.
    import ast
    from pathlib import Path

    tree = ast.parse(Path(nosana_magic.__file__).read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If)
                 and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
    typed = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
             and node.level == 1 for alias in node.names}
    assert typed == nosana_magic._EXPORTS
