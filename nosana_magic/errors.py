"""Every error a user of the package can catch, in one tree.

Notebooks show ``_render_traceback_`` instead of a traceback, so a failed job or a bad cell is
one clean line, and headless runs (nbclient, papermill) still record a real ``error`` output.
Each message says where and what, and never holds a secret. All of these are importable from
``nosana_magic`` itself; the modules that raise them re-export them.

The tree::

    Exception
     ├── NosanaError                    every error raised on purpose
     │    ├── SettingsError             a setting that cannot work (names it and its source)
     │    ├── WalletError               no usable wallet (says where it looked)
     │    ├── JobDefinitionError        an invalid job definition, every problem located
     │    ├── SecretError               a ${env:…}/${var:…}/${param:…} that does not resolve
     │    ├── ParamError                a sweep's parameters that cannot work (says which and why)
     │    ├── SpendNotConfirmed         a job on a paid network that nobody confirmed
     │    ├── NetworkError              the ledger, IPFS or a market refused or is unreachable
     │    │    ├── UnknownMarketError   no such market (also a LookupError)
     │    │    ├── OutcomeUnknown       sent, but the answer was lost: it may have taken effect
     │    │    ├── InsufficientFundsError  the wallet cannot pay; says what is missing
     │    │    ├── InsufficientCreditsError  the API key's credits cannot pay (402)
     │    │    ├── TransactionFailedError  the cluster rejected a transaction (``logs``)
     │    │    └── IpfsError            pinning or reading a document failed, or no JWT
     │    ├── HostError                 a job's host refused a request or stopped answering
     │    ├── JobNotFound               no job of this kernel matches a reference
     │    ├── StoreError                the local store cannot be opened or read, or lacks a job
     │    └── JobFailed                 a job that did not succeed (``raise_for_status``)
     │         ├── JobStopped           stopped by you before it finished
     │         ├── JobExpired           it reached its timeout
     │         └── JobLost              its host or the ledger quit or stopped answering
     └── KeyError
          └── MissingResult             a name that is not among a job's results or ops
    BaseException
     └── KeyboardInterrupt
          └── JobInterrupted            Ctrl-C while waiting: the job was stopped

``JobDefinitionError`` is also a ``ValueError``. The pure layers raise their own errors
(``protocol``: ``AuthError``, ``CidError``, ``DurationError``; ``chain``:
``AccountDecodeError``, ``InstructionArgError``, ``InstructionDecodeError``), all
``NosanaError`` subclasses; the client turns them into the errors above before they reach you.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .job import ConfidentialJob
    from .jsonc import Problem

__all__ = [
    "HostError",
    "InsufficientCreditsError",
    "InsufficientFundsError",
    "IpfsError",
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
    "SecretError",
    "SettingsError",
    "SpendNotConfirmed",
    "StoreError",
    "TransactionFailedError",
    "UnknownMarketError",
    "WalletError",
]


class NosanaError(Exception):
    """Base class of every error this package raises on purpose.

    The message is written for the user: it says where and what, and never holds a secret.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {line}" if i == 0 else f"  {line}"
                for i, line in enumerate(str(self).splitlines() or [""])]


# --------------------------------------------------------------------------- before anything runs


class SettingsError(NosanaError):
    """A setting with a value that cannot work; the message names the setting and its source."""


class WalletError(NosanaError):
    """No usable wallet: the message says where it looked, never what it read."""


class JobDefinitionError(NosanaError, ValueError):
    """An invalid job definition: every problem found, each located.

    ``line``/``column``/``path``/``message`` describe the first problem; ``problems`` holds all.
    """

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("JobDefinitionError needs at least one problem")
        self.problems = problems
        first = problems[0]
        self.line = first.line
        self.column = first.column
        self.path = first.path
        self.message = first.message
        more = len(problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"{first}{suffix}")

    def _render_traceback_(self) -> list[str]:
        name = type(self).__name__
        return [f"{name}: {self.problems[0]}", *(f"  {p}" for p in self.problems[1:])]


class SecretError(NosanaError):
    """A reference could not be resolved. Names every missing variable, never a value."""

    def __init__(self, problems: list[Problem], names: list[str] | None = None, *,
                 unset_env: list[str] | None = None) -> None:
        lines = [str(p) for p in problems]
        if unset_env:
            # Exactly what to set, and a way that never puts the value in a cell.
            first = unset_env[0]
            lines.append(f"set {', '.join(unset_env)} in the kernel's environment: export "
                         f"{first}=… before starting Jupyter, or run "
                         f"os.environ[{first!r}] = getpass.getpass() in a cell")
        super().__init__("\n".join(lines))
        self.problems = problems
        self.names: list[str] = list(dict.fromkeys(names or []))
        """The variable names that could not be resolved, in order of appearance."""


class ParamError(NosanaError):
    """A sweep's parameters cannot work; the message names the option or row, and what."""


class StoreError(NosanaError):
    """The local store cannot be opened or read, or a job is not in it; the message says
    which."""


class SpendNotConfirmed(NosanaError):
    """A job on a paid network was not confirmed (declined, or nobody could be asked)."""


# --------------------------------------------------------------------------- the network


class NetworkError(NosanaError):
    """The ledger, IPFS or a market refused or could not be reached (after bounded retries)."""


class OutcomeUnknown(NetworkError):
    """A request that changes something (listing a job, extending it) was sent, and its
    answer was lost: a 5xx after the work, a timeout, a transaction not confirmed in time. It
    may have taken effect. ``job`` is the job's address when it was known before sending (on
    chain the client makes it); a listing's job may then exist, running and paid for."""

    def __init__(self, message: str, *, job: str | None = None) -> None:
        super().__init__(message)
        self.job = job


class UnknownMarketError(NetworkError, LookupError):
    """A market slug that no table knows, or text that is neither a slug nor an address."""


class InsufficientFundsError(NetworkError):
    """The wallet cannot pay for what was asked; the message says what is missing and how much."""


class InsufficientCreditsError(NetworkError):
    """The API key's credits do not cover what was asked; nothing was listed or added."""


class TransactionFailedError(NetworkError):
    """The cluster rejected a transaction. ``logs`` holds the program's log lines."""

    def __init__(self, message: str, *, logs: Sequence[str] = (), signature: str | None = None):
        super().__init__(message)
        self.logs = list(logs)
        self.signature = signature


class IpfsError(NetworkError):
    """Pinning or reading a document failed (after bounded retries), or no credential is set."""


# --------------------------------------------------------------------------- the host


class HostError(NosanaError):
    """A host refused a request, or could not be reached within the retry bound.

    The message names the host and the route, and holds at most the host's short error
    string (never a request or response body).
    """

    def __init__(
        self,
        host: str,
        route: str,
        problem: str,
        *,
        status: int | None = None,
        host_message: str | None = None,
        gave_up: bool = False,
    ) -> None:
        super().__init__(f"host {host}: {route}: {problem}")
        self.host = host
        self.route = route
        self.status = status
        #: The host's own error text (short, redacted), if it sent one.
        self.host_message = host_message
        #: True when a retry bound ran out (the host may answer again later); False when the
        #: host refused (retrying the same request cannot help).
        self.gave_up = gave_up


# --------------------------------------------------------------------------- jobs


class JobNotFound(NosanaError):
    """No job of this process matches a reference (or more than one does)."""


class JobFailed(NosanaError):
    """A job that did not succeed (:meth:`ConfidentialJob.raise_for_status`). One line."""

    #: The job's outcome is unknown (its host or the ledger stopped answering).
    lost: ClassVar[bool] = False

    def __init__(self, message: str, job: ConfidentialJob | None = None) -> None:
        super().__init__(message)
        self.job = job


class JobStopped(JobFailed):
    """A job that was stopped (by you) before it finished."""


class JobExpired(JobFailed):
    """A job that reached its timeout: the host ended it, its ops cut short."""


class JobLost(JobFailed):
    """A job whose outcome is unknown: its host (or the ledger) quit or stopped answering."""

    lost = True


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C while waiting on a job: the job was stopped. Shows one line, no traceback.

    ``sent`` is True when the stop request went through.
    """

    def __init__(self, message: str, job: ConfidentialJob | None = None, *,
                 sent: bool = False) -> None:
        super().__init__(message)
        self.job = job
        self.sent = sent

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


class MissingResult(KeyError):
    """A name that is not among a job's results (or ops). One line: what there is, and why.

    A ``KeyError``, so ``name in job.results`` and ``job.results.get(name)`` work as for any
    dict; ``key`` is the name looked up.
    """

    def __init__(self, message: str, key: object = None) -> None:
        super().__init__(message)
        self.key = key

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]
