"""Run confidential GPU jobs on the Nosana network from IPython and Jupyter.

``%load_ext nosana_magic`` registers the ``%%nosana_confidential`` cell magic and the
``%nosana`` line magic. From plain Python: ``nosana_magic.run_confidential(...)``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public names and the module that defines each. Imported on first use, so that
# ``%load_ext`` and ``import nosana_magic`` stay fast (solana, httpx and pydantic models
# load only when a job needs them).
_EXPORTS = {
    "NosanaError": "errors",
    "parse_job_definition": "jobdef",
    "validate_job_definition": "jobdef",
    "JobDefinition": "jobdef",
    "JobDefinitionError": "jobdef",
    "SecretError": "secrets",
    "Redactor": "secrets",
    "Wallet": "wallet",
    "WalletError": "wallet",
    "load_wallet": "wallet",
    "FlowState": "results",
    "ServiceUrl": "results",
    "ConfidentialJob": "job",
    "JobFailed": "job",
    "run_confidential": "job",
}

__all__ = [*sorted(_EXPORTS), "load_ipython_extension", "unload_ipython_extension"]

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nosana_magic' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


def load_ipython_extension(shell: InteractiveShell) -> None:
    """Called by ``%load_ext nosana_magic``: registers the magics."""
    from .magics import register

    register(shell)


def unload_ipython_extension(shell: InteractiveShell) -> None:
    from .magics import unregister

    unregister(shell)
