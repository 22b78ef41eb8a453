"""Run confidential GPU jobs on the Nosana network from IPython and Jupyter.

``%load_ext nosana_magic`` registers the ``%%nosana_confidential`` cell magic and the
``%nosana`` line magic. From plain Python: ``nosana_magic.run_confidential(...)``, a sweep of
jobs with ``nosana_magic.sweep(...)``, a past run with ``nosana_magic.load(address)``.

Every error a user can catch is exported here; :mod:`nosana_magic.errors` draws their tree.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public names and the module that defines each. Imported on first use, so that
# ``%load_ext`` and ``import nosana_magic`` stay fast (solana, httpx and pydantic models
# load only when a job needs them). The TYPE_CHECKING block below names the same objects
# for type checkers and IDEs.
_EXPORTS = {
    # running jobs
    "run_confidential": "job",
    "ConfidentialJob": "job",
    "sweep": "sweeps",
    "Runs": "sweeps",
    "load": "history",
    "Settings": "settings",
    "parse_job_definition": "jobdef",
    "validate_job_definition": "jobdef",
    "JobDefinition": "jobdef",
    "FlowState": "results",
    "ServiceUrl": "results",
    "Wallet": "wallet",
    "load_wallet": "wallet",
    # errors (nosana_magic.errors draws the tree)
    "NosanaError": "errors",
    "SettingsError": "errors",
    "WalletError": "errors",
    "JobDefinitionError": "errors",
    "SecretError": "errors",
    "ParamError": "errors",
    "StoreError": "errors",
    "SpendNotConfirmed": "errors",
    "NetworkError": "errors",
    "UnknownMarketError": "errors",
    "InsufficientCreditsError": "errors",
    "OutcomeUnknown": "errors",
    "InsufficientFundsError": "errors",
    "TransactionFailedError": "errors",
    "IpfsError": "errors",
    "HostError": "errors",
    "JobNotFound": "errors",
    "JobFailed": "errors",
    "JobStopped": "errors",
    "JobExpired": "errors",
    "JobLost": "errors",
    "JobInterrupted": "errors",
    "MissingResult": "errors",
}

# Spelt out (not computed) so that type checkers and linters see it; a test keeps it equal
# to the table above.
__all__ = [
    "ConfidentialJob",
    "FlowState",
    "HostError",
    "InsufficientCreditsError",
    "InsufficientFundsError",
    "IpfsError",
    "JobDefinition",
    "JobDefinitionError",
    "JobExpired",
    "JobFailed",
    "JobInterrupted",
    "JobLost",
    "JobNotFound",
    "JobStopped",
    "MissingResult",
    "NetworkError",
    "NosanaError",
    "OutcomeUnknown",
    "ParamError",
    "Runs",
    "SecretError",
    "ServiceUrl",
    "Settings",
    "SettingsError",
    "SpendNotConfirmed",
    "StoreError",
    "TransactionFailedError",
    "UnknownMarketError",
    "Wallet",
    "WalletError",
    "load",
    "load_ipython_extension",
    "load_wallet",
    "parse_job_definition",
    "run_confidential",
    "sweep",
    "unload_ipython_extension",
    "validate_job_definition",
]

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from .errors import (
        HostError,
        InsufficientCreditsError,
        InsufficientFundsError,
        IpfsError,
        JobDefinitionError,
        JobExpired,
        JobFailed,
        JobInterrupted,
        JobLost,
        JobNotFound,
        JobStopped,
        MissingResult,
        NetworkError,
        NosanaError,
        OutcomeUnknown,
        ParamError,
        SecretError,
        SettingsError,
        SpendNotConfirmed,
        StoreError,
        TransactionFailedError,
        UnknownMarketError,
        WalletError,
    )
    from .history import load
    from .job import ConfidentialJob, run_confidential
    from .jobdef import JobDefinition, parse_job_definition, validate_job_definition
    from .results import FlowState, ServiceUrl
    from .settings import Settings
    from .sweeps import Runs, sweep
    from .wallet import Wallet, load_wallet


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
