"""IPython magics: ``%%nosana_confidential`` (run a confidential job) and ``%nosana …``.

Registered by ``%load_ext nosana_magic`` (``load_ipython_extension`` → :func:`register`), never
at import time.

Settings precedence, highest first:

1. a flag on the magic line (``--market``, ``--timeout``, ``--network``, ``--node``);
2. a ``%config NosanaMagics.<trait>`` value (or ``c.NosanaMagics.<trait>`` in a config file);
3. the environment (``NOSANA_NETWORK``, ``NOSANA_MARKET``, ``NOSANA_TIMEOUT``,
   ``NOSANA_DEVNODE_URL``, ``NOSANA_NODE_URL_TEMPLATE``, ``NOSANA_RPC_URL``, ``NOSANA_WALLET``,
   ``NOSANA_PAY``, ``NOSANA_API_KEY``);
4. the defaults of :class:`~nosana_magic.settings.Settings` (the local network, 30 minutes).

A trait left at ``None`` is *unset*, so the environment shows through it. Traits hold no
secret (``%config NosanaMagics`` prints them): the wallet and API keys come only from the
environment or key files, and ``%nosana config`` shows them only as set/unset.

The cell body is data: the magic is ``@no_var_expand``, so neither the line nor the body goes
through IPython's ``$var``/``{var}`` expansion (an expanded line would put values into argparse
error messages). References are explicit: ``${env:NAME}`` (a secret) and ``${var:NAME}`` (a
notebook variable, resolved against the shell's namespace).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import re
import sys
import textwrap
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from keyword import iskeyword
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from IPython.core import magic_arguments as _margs
from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import (
    Magics,
    cell_magic,
    line_magic,
    magics_class,
    no_var_expand,
)
from traitlets import Bool, Int, TraitError, Unicode, validate

from .display import JobView, Table, follow, in_kernel
from .errors import NosanaError, SpendNotConfirmed
from .protocol import DurationError, format_duration, parse_duration
from .settings import reference_env

if TYPE_CHECKING:
    from .job import ConfidentialJob, Private
    from .jobdef import JobDefinition
    from .network.base import Market, Network
    from .network.nosana_api import CreditBalance
    from .settings import Settings
    from .sweeps import Runs

__all__ = ["NosanaMagics", "SpendNotConfirmed", "register", "unregister"]

#: Names IPython's output and input caching keep in the namespace (``_``, ``__``, ``___``,
#: ``_i``, ``_ii``, ``_iii``, ``_7``, ``_i7``, ``_oh``, ``_ih``, ``_dh``) and dunder names.
_IPYTHON_NAME = re.compile(r"_{1,3}|_i{1,3}|_i?\d+|_[oid]h|__\w+__")


_HELP_FLAGS = ("-h", "--help")

_CELL_EXAMPLE = """\
Example (runs locally as it is; add --network mainnet to run it on Nosana):

  %%nosana_confidential --market nvidia-3090 --timeout 10m -o run
  {
    "version": "0.1", "type": "container", "meta": {"trigger": "cli"},
    "ops": [{"type": "container/run", "id": "train",
             "args": {"image": "pytorch/pytorch", "gpu": true,
                      "cmd": ["python3", "-c", "print('loss=0.25')"]},
             "results": {"loss": "loss=([0-9.]+)"}}]
  }

  then: run.results["loss"], run.ops["train"].exit_code, run.urls, run.logs[-5:]"""


_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


class _Decorator(Protocol):
    def __call__(self, fn: _F, /) -> _F: ...


# Typed faces of IPython's (untyped) magic_arguments helpers.
def magic_arguments() -> _Decorator:
    return _margs.magic_arguments()  # type: ignore[no-untyped-call]


def argument(*args: Any, **kwargs: Any) -> _Decorator:
    return _margs.argument(*args, **kwargs)  # type: ignore[no-untyped-call]


def _cell_magic(fn: _F) -> _F:
    # IPython's marker is typed as returning a union (it also takes a name); keep the method.
    return cast("_F", cell_magic(fn))


def _line_magic(fn: _F) -> _F:
    return cast("_F", line_magic(fn))


def parse_argstring(magic: Callable[..., Any], line: str) -> argparse.Namespace:
    """Parse ``line`` for ``magic``; bad input raises ``UsageError`` (the exact class)."""
    return _margs.parse_argstring(magic, line)  # type: ignore[no-untyped-call, no-any-return]


# --------------------------------------------------------------------------- %nosana commands

_Run = Callable[["NosanaMagics", argparse.Namespace], object]


@dataclass(frozen=True)
class _Command:
    """One ``%nosana`` subcommand: its usage line, what it is in a few words, and the
    function that runs it, whose docstring is the command's help."""

    usage: str
    summary: str
    run: _Run
    #: The command needs a ``JOB`` (an address, or a unique prefix of one).
    needs_job: bool = False

    @property
    def help(self) -> str:
        return " ".join(inspect.cleandoc(self.run.__doc__ or "").split())


#: The router: ``%nosana NAME …`` runs ``_COMMANDS[NAME]``; ``%nosana help`` is built from it.
_COMMANDS: dict[str, _Command] = {}


def _command(name: str, usage: str, summary: str, *,
             needs_job: bool = False) -> Callable[[_Run], _Run]:
    def add(run: _Run) -> _Run:
        _COMMANDS[name] = _Command(usage, summary, run, needs_job)
        return run

    return add


@_command("jobs", "%nosana jobs [--last N] [--sweep NAME] [--status WORD]",
          "past runs, of every kernel")
def _jobs(magics: NosanaMagics, args: argparse.Namespace) -> Table:
    """The runs recorded in the local store, of every kernel, newest first (20 unless
    --last N): address, network, market, status, when, elapsed time, sweep, parameters,
    results. --sweep NAME lists a sweep's jobs in order (a name means its latest sweep);
    --status failed (or succeeded, stopped, expired, lost; running: not finished) filters.
    Without a usable store, this kernel's jobs."""
    from .errors import StoreError
    from .history import jobs_table

    try:
        return jobs_table(last=args.last, sweep=args.sweep, status=args.status,
                          settings=magics.settings())
    except StoreError as exc:
        if args.sweep:
            raise
        print(f"note: {exc}; this kernel's jobs instead", file=sys.stderr)
        return _kernel_jobs()


def _kernel_jobs() -> Table:
    from .job import jobs

    rows = [[job.address or "(not listed)", job.network_name,
             job.market.slug if job.market is not None else "", job.status,
             "" if job.elapsed is None else format_duration(job.elapsed)]
            for job in jobs()]
    return Table(["job", "network", "market", "status", "elapsed"], rows,
                 title="nosana jobs in this kernel", empty="no jobs yet in this kernel")


def _find(magics: NosanaMagics, ref: str) -> ConfidentialJob:
    """A job of this kernel, else a finished one from the local store (JobNotFound, or the
    store's one line, if neither has it)."""
    from .errors import StoreError
    from .history import load
    from .job import JobNotFound, find_job

    try:
        return find_job(ref)
    except JobNotFound:
        try:
            return load(ref, settings=magics.settings())
        except StoreError as exc:
            raise JobNotFound(f"no job of this kernel matches {ref!r}, and {exc}") from None


@_command("status", "%nosana status [JOB]", "a job's handle")
def _status(magics: NosanaMagics, args: argparse.Namespace) -> ConfidentialJob:
    """The job's handle, shown as its table (default: this kernel's latest job); a job of
    another kernel that finished comes from the local store. `run = %nosana status JOB`
    keeps it in a variable."""
    from .job import JobNotFound, jobs

    if args.job:
        return _find(magics, args.job)
    known = jobs()
    if not known:
        raise JobNotFound("no job yet in this kernel")
    return known[-1]


@_command("show", "%nosana show JOB", "a finished job, from the local store", needs_job=True)
def _show(magics: NosanaMagics, args: argparse.Namespace) -> ConfidentialJob:
    """A finished job from the local store, with no network, in any kernel: its summary
    printed, its handle returned (results, ops, logs, warnings). `run = %nosana show JOB`
    keeps it; nosana_magic.load(JOB) does the same from Python."""
    from .display import summary_text
    from .history import load

    job = load(args.job, settings=magics.settings())
    print(summary_text(job))
    return job


@_command("logs", "%nosana logs JOB", "print a job's log", needs_job=True)
def _logs(magics: NosanaMagics, args: argparse.Namespace) -> None:
    """Every log line of the job so far (container stderr on stderr, the host's own lines
    marked `host:`), of this kernel's job or from the local store."""
    for line in _find(magics, args.job).logs:
        stream = sys.stderr if line.stream == "stderr" else sys.stdout
        prefix = f"[{line.op_id}] " if line.op_id else ""
        print(prefix + line.text.rstrip("\n"), file=stream)


@_command("forget", "%nosana forget JOB | --sweep NAME | --older-than 30d | --all",
          "remove records from the local store")
def _forget(magics: NosanaMagics, args: argparse.Namespace) -> None:
    """Remove jobs from the local store, their logs with them: one job, a whole sweep, those
    older than a duration, or --all. The jobs themselves are not touched (a running one goes
    on; only its record is gone)."""
    from .store import open_store

    older = None
    if args.older_than is not None:
        try:
            older = parse_duration(args.older_than)
        except DurationError as err:
            raise UsageError(f"--older-than: {err}") from None
    if not (args.job or args.sweep or older is not None or args.all):
        raise UsageError("%nosana forget needs a JOB, --sweep NAME, --older-than DURATION or "
                         "--all")
    store = open_store(magics.settings())
    count = store.forget([args.job] if args.job else [], sweep=args.sweep, older_than=older,
                         everything=args.all)
    print(f"forgot {count} job{'s' if count != 1 else ''} ({store.path})")


@_command("stop", "%nosana stop JOB", "stop a job", needs_job=True)
def _stop(magics: NosanaMagics, args: argparse.Namespace) -> None:
    """Stop the job: its host ends it (the results stay collectable), or the ledger
    delists it while it is queued. Waits up to 10 s for the end and says how the job
    ended; a Ctrl-C does not cancel the stop."""
    from .job import END_WAIT_S, find_job, stop_line

    job = find_job(args.job)
    if job.done:
        print(f"job {job.address} already ended: {job.status}")
        return
    job.stop()
    with contextlib.suppress(TimeoutError):
        job.wait(END_WAIT_S)  # the host ends it within seconds; say how it ended
    print(stop_line(job))


@_command("attach", "%nosana attach JOB [-b] [-q] [--network NETWORK]", "follow a job live",
          needs_job=True)
def _attach(magics: NosanaMagics, args: argparse.Namespace) -> ConfidentialJob | None:
    """A live view of a job of this kernel, or of any job your wallet listed (from another
    kernel, before a restart): its log history, then the live log, and its private results
    when it ends. A job in the local store is followed on the network it was recorded on
    (no --network needed), and its record goes on from there. -b returns at once (then
    `run = %nosana status JOB` gets the handle), -q shows the status only."""
    from .job import ConfidentialJob, JobNotFound, find_job

    notices = _Notices()
    try:
        job = find_job(args.job)
    except JobNotFound:
        # Started in another kernel (or before a restart) with the same wallet.
        address, network = _recorded(magics, args.job, args.network)
        job = ConfidentialJob.attach(address, magics.settings(network=network),
                                     on_notice=notices)
    notices.flush()
    view = JobView(job, tail=magics.log_tail, quiet=args.quiet).show(background=args.background)
    if args.background:
        return None  # the live view shows it (`run = %nosana status JOB` gets the handle)
    follow(job, view, each=notices.flush)
    job.raise_for_status()
    return job


def _recorded(magics: NosanaMagics, ref: str, network: str | None) -> tuple[str, str | None]:
    """A job's full address and network as the local store has them (``ref`` and ``network``
    as given when it has no record of it)."""
    from .errors import StoreError
    from .store import open_store

    try:
        record = open_store(magics.settings()).job(ref)
    except StoreError:
        return ref, network
    return record.address or ref, network or record.network


@_command("markets", "%nosana markets [--network NETWORK]", "a network's markets")
def _markets(magics: NosanaMagics, args: argparse.Namespace) -> Table:
    """The markets of a network: address, price per hour (in NOS, and in credits where the
    market says), idle hosts."""
    from .network.markets import format_usd

    settings = magics.settings(network=args.network)
    markets = _with_network(settings, lambda network: network.markets())
    rows = [[m.slug, m.address, f"{m.nos_per_hour:.6g}",
             "" if (usd := m.usd_per_hour_with_fee) is None else format_usd(usd),
             str(m.idle_hosts)] for m in markets]
    return Table(["market", "address", "NOS/h", "credits/h", "idle hosts"], rows,
                 title=f"markets on {settings.network}")


@_command("credits", "%nosana credits [--network NETWORK]", "the API key's credit balance")
def _credits(magics: NosanaMagics, args: argparse.Namespace) -> Table:
    """The credits of the API key (NOSANA_API_KEY): assigned, reserved for jobs that have
    not ended, settled (spent) and available, in USD."""
    from .network.markets import format_usd

    settings = magics.settings(network=args.network, pay="credits")
    balance = _with_network(settings, _balance)
    rows = [[name, format_usd(value)] for name, value in (
        ("assigned", balance.assigned), ("reserved", balance.reserved),
        ("settled", balance.settled), ("available", balance.available))]
    return Table(["credits", "USD"], rows, title=f"nosana credits on {settings.network}")


@_command("config", "%nosana config", "the settings and their sources")
def _config(magics: NosanaMagics, args: argparse.Namespace) -> Table:
    """Every setting, its value and where it comes from (credentials only as set/unset)."""
    return magics._config_table()


@_command("local", "%nosana local [status|start|stop]", "the local network service")
def _local(magics: NosanaMagics, args: argparse.Namespace) -> Table | None:
    """The local Nosana network your kernels and scripts share (one service per user, in a
    process of its own, found through a runtime file in the data dir): `status` (the
    default) says where it listens, its pid, its jobs, how long it has been idle and how
    late its event loop wakes; `start` starts it now (otherwise the first local job does);
    `stop` stops it, and every job still on it (their processes are killed). It also stops
    by itself after `local_idle` with no job and no request (`%config
    NosanaMagics.local_idle`, NOSANA_LOCAL_IDLE; 0: never)."""
    from .network import local

    action = args.job or "status"
    settings = magics.settings()
    if action == "status":
        rows = [list(row) for row in local.describe_service(settings)]
        return Table(["local network", ""], rows, title="the local Nosana network service")
    if action == "start":
        info, started = local.ensure_service(settings)
        if not started:
            print(f"the local Nosana network already runs at {info.url} (pid {info.pid})")
        else:
            local.announce_service(info, started, print)
        return None
    if action == "stop":
        found = local.service_status(settings)
        stopped = local.stop_local_service(settings)
        if stopped is None:
            print("no local Nosana network runs for this user")
            return None
        active = found[1].get("jobs", {}).get("active", 0) if found is not None else 0
        ended = f"; {active} job(s) on it were ended" if active else ""
        print(f"stopped the local Nosana network (pid {stopped.pid}){ended}")
        return None
    raise UsageError(f"%nosana local: unknown action {action!r} (status, start or stop)")


@_command("help", "%nosana help [COMMAND]", "this help")
def _help(magics: NosanaMagics, args: argparse.Namespace) -> None:
    """This help, or one command's."""
    print(magics._line_help(args.job))



@magics_class
class NosanaMagics(Magics):
    """``%%nosana_confidential`` and ``%nosana``; settings as ``%config NosanaMagics.*``."""

    network = Unicode(
        None, allow_none=True,
        help="Default network: local (the local network service), devnet or mainnet. "
             "Unset: NOSANA_NETWORK, else local.").tag(config=True)
    market = Unicode(
        None, allow_none=True,
        help="Default market slug or address. Unset: NOSANA_MARKET, else the first local "
             "market (required on devnet/mainnet).").tag(config=True)
    timeout = Unicode(
        None, allow_none=True,
        help="Default job timeout: 90s, 30m, 2h (a bare number is minutes). "
             "Unset: NOSANA_TIMEOUT, else 30m.").tag(config=True)
    devnode_url = Unicode(
        None, allow_none=True,
        help="A running devnode to use for --network local instead of the local network "
             "service. Unset: NOSANA_DEVNODE_URL.").tag(config=True)
    node_url_template = Unicode(
        None, allow_none=True,
        help="Node API base URL containing {node}. Unset: the network's own.").tag(config=True)
    rpc_url = Unicode(
        None, allow_none=True,
        help="Solana RPC endpoint without credentials (a URL carrying an API key belongs in "
             "NOSANA_RPC_URL, which is never printed).").tag(config=True)
    local_idle = Unicode(
        None, allow_none=True,
        help="How long the local network service may go without a job or a request before "
             "it stops: 30m, 2h, 0 for never. Unset: NOSANA_LOCAL_IDLE, else 1h.").tag(config=True)
    log_tail = Int(
        1000, help="Log lines the live view keeps on screen (the job handle keeps all)."
    ).tag(config=True)
    confirm_spend = Bool(
        True, help="Ask before listing a job on devnet/mainnet (headless runs refuse "
                   "unless --yes or this is False).").tag(config=True)
    pay = Unicode(
        None, allow_none=True,
        help="How jobs are paid: credits (a Nosana API key, from NOSANA_API_KEY or the "
             "credentials file, never a trait) or wallet. Unset: NOSANA_PAY, else credits "
             "when an API key is set, else the wallet.").tag(config=True)

    @validate("pay")
    def _check_pay(self, proposal: dict[str, Any]) -> str | None:
        from .settings import PAYMENTS

        value = proposal["value"]
        if value is not None and value.lower() not in PAYMENTS:
            raise TraitError(f"pay must be one of {', '.join(PAYMENTS)}, got {value!r}")
        return None if value is None else str(value).lower()

    @validate("network")
    def _check_network(self, proposal: dict[str, Any]) -> str | None:
        from .settings import NETWORKS

        value = proposal["value"]
        if value is not None and value.lower() not in NETWORKS:
            raise TraitError(f"network must be one of {', '.join(NETWORKS)}, got {value!r}")
        return None if value is None else str(value).lower()

    @validate("timeout", "local_idle")
    def _check_timeout(self, proposal: dict[str, Any]) -> str | None:
        value = proposal["value"]
        never = proposal["trait"].name == "local_idle" and str(value).strip().lower() in (
            "0", "off", "never")
        if value is not None and not never:
            try:
                parse_duration(value)
            except DurationError as err:
                raise TraitError(str(err)) from None
        return value  # type: ignore[no-any-return]

    @validate("rpc_url")
    def _check_rpc_url(self, proposal: dict[str, Any]) -> str | None:
        from urllib.parse import urlsplit

        value = proposal["value"]
        if value is not None:
            parts = urlsplit(value)
            # A path segment this long is a provider's key (``/v2/<key>``), not a route.
            keyed_path = any(len(segment) >= 16 for segment in parts.path.split("/"))
            if parts.username or parts.password or parts.query or keyed_path:
                # %config NosanaMagics prints traits; a key in the URL would end up on screen.
                raise TraitError("rpc_url must not carry credentials (user info, a query or a "
                                 "key in the path); put such a URL in the NOSANA_RPC_URL "
                                 "environment variable")
        return value  # type: ignore[no-any-return]

    @validate("log_tail")
    def _check_log_tail(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if value < 1:
            raise TraitError(f"log_tail must be at least 1, got {value}")
        return value

    # -- settings ------------------------------------------------------------------------

    def _trait_overrides(self) -> dict[str, Any]:
        """The traits that are set (``None`` means unset: the environment shows through)."""
        return {name: getattr(self, name)
                for name in ("network", "market", "timeout", "devnode_url",
                             "node_url_template", "rpc_url", "pay", "local_idle")
                if getattr(self, name) is not None}

    def settings(self, **flags: Any) -> Settings:
        """The effective settings: flags > traits > environment > defaults."""
        from .settings import Settings

        return Settings.from_env(
            source="%config NosanaMagics.{name}", **self._trait_overrides()
        ).with_overrides(source="flag --{name}", **flags)

    # -- %%nosana_confidential -----------------------------------------------------------

    @no_var_expand
    @magic_arguments()
    @argument("-m", "--market", help="Market slug or address (default: the configured one).")
    @argument("-t", "--timeout",
              help="Job timeout: 90s, 30m, 2h; a bare number is minutes (default 30m).")
    @argument("--network", choices=["local", "devnet", "mainnet"],
              help="Where to run: local (the local network service, default), devnet, mainnet.")
    @argument("-o", "--out", metavar="NAME",
              help="Store the job handle in this notebook variable (as soon as it exists).")
    @argument("-b", "--background", action="store_true",
              help="Return at once; the view keeps updating. The handle is in the -o NAME "
                   "variable; without -o, `run = %%nosana status` gets it.")
    @argument("-q", "--quiet", action="store_true",
              help="Show the status only (the handle still collects every log line).")
    @argument("--node", help="Run on this host (node address).")
    @argument("--send-only", action="store_true",
              help="Private input, public results: the host pins its results publicly.")
    @argument("--receive-only", action="store_true",
              help="Public input, private results: the definition itself is pinned publicly "
                   "(it must hold no secret).")
    @argument("-y", "--yes", action="store_true",
              help="Do not ask before spending on devnet/mainnet.")
    @argument("--sweep", action="append", metavar="NAME=V1,V2,…",
              help="Run one job per value (repeat for a grid: every combination); the values "
                   "reach the definition as ${param:NAME}.")
    @argument("--params", metavar="ROWS",
              help="Run one job per row of this notebook variable (a list of dicts, or a "
                   "DataFrame); with --sweep, every row with every grid point.")
    @argument("--parallel", type=int, metavar="N",
              help="A sweep's jobs that run at once (default 4).")
    @argument("--pay", choices=["credits", "wallet"],
              help="Pay with the API key's credits (NOSANA_API_KEY) or the wallet (default: "
                   "credits when an API key is set).")
    @_cell_magic
    def nosana_confidential(self, line: str, cell: str) -> ConfidentialJob | Runs | None:
        """Run the cell's Nosana job definition (JSON, comments allowed) as a confidential job.

        The public placeholder goes to IPFS; the real definition (``${env:NAME}`` and
        ``${var:NAME}`` resolved only now) goes straight to the host that takes the job.
        Logs stream into the cell's live view; the job handle (``.results``, ``.urls``,
        ``.ops``, ``.logs``, ``.status``, ``.stop()``, ...) goes into the ``-o NAME``
        variable, or, without ``-o``, is the cell's result once the job has ended. The cell
        waits for the job unless ``-b``: an interrupt (Ctrl-C, the stop button) then stops
        the job. A job that did not succeed fails the cell, in one line.

        With ``--sweep NAME=V1,V2`` (repeatable: a grid) or ``--params ROWS`` the cell runs
        one confidential job per parameter set, ``--parallel N`` at a time, each value in
        the definition's ``${param:NAME}``; the cell shows one live table, and the sweep
        (``runs[i]``, ``runs.to_pandas()``, ``runs.best("loss")``) goes into ``-o NAME``.
        Jobs that fail do not fail the cell: the table says which. Every job, swept or not,
        is recorded in the local store (``%nosana jobs``).

        The default network is the local network service, which also takes Nosana's market
        names (``nvidia-3090`` runs on ``local-gpu``): the same cell runs on mainnet with
        ``--network mainnet``. Settings: a flag wins over ``%config NosanaMagics.<name>``,
        which wins over the ``NOSANA_*`` environment variables; ``%nosana config`` shows each
        with its source. ``%%nosana_confidential --help`` prints this.
        """
        if _wants_help(line):
            print(self._cell_help())
            return None  # help only: the body is not run
        args, timeout = self._cell_args(line)
        definition = self._cell_definition(cell)
        namespace = self.shell.user_ns if self.shell is not None else {}
        sets = self._param_sets(args, namespace, definition) if (
            args.sweep or args.params is not None) else None
        # Every reference must resolve, and each definition as it will be sent be one a host
        # runs, before anything is pinned or listed.
        each: list[dict[str, Any] | None] = [*sets] if sets else [None]
        for params in each:
            definition.check_resolved(env=reference_env(), namespace=namespace, params=params)

        settings = self.settings(network=args.network, market=args.market, timeout=timeout,
                                 pay=args.pay)
        settings, credits = self._before_listing(settings, node=args.node,
                                                 assume_yes=args.yes,
                                                 jobs=len(sets) if sets else 1)
        if sets is not None:
            return self._run_sweep(args, definition, sets, settings, namespace)
        return self._run_one(args, definition, settings, namespace, credits)

    def _cell_args(self, line: str) -> tuple[argparse.Namespace, int | None]:
        args = parse_argstring(self.nosana_confidential, line)
        if args.send_only and args.receive_only:
            raise UsageError("--send-only and --receive-only exclude each other")
        if args.out is not None:
            self._check_out_name(args.out)
        if args.parallel is not None:
            if not (args.sweep or args.params is not None):
                raise UsageError("--parallel is for a sweep (--sweep or --params)")
            if args.parallel < 1:
                raise UsageError(f"--parallel: at least 1 job at a time, got {args.parallel}")
        timeout = None
        if args.timeout is not None:
            try:
                timeout = parse_duration(args.timeout)
            except DurationError as err:
                raise UsageError(f"--timeout: {err}") from None
        return args, timeout

    def _cell_definition(self, cell: str) -> JobDefinition:
        from .jobdef import parse_job_definition

        if not cell.strip():
            raise UsageError("the cell is empty: put a Nosana job definition (JSON) under "
                             "the %%nosana_confidential line")
        # Line 1 is the magic's own line: locations are the lines the notebook shows.
        definition = parse_job_definition(cell, first_line=2)
        for warning in definition.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for note in definition.notes:
            print(f"note: {note}", file=sys.stderr)
        return definition

    def _param_sets(self, args: argparse.Namespace, namespace: Mapping[str, Any],
                    definition: JobDefinition) -> list[dict[str, Any]]:
        """The sweep's parameter sets, checked against the definition (one line if not)."""
        from .params import check_params, expand

        rows = None
        if args.params is not None:
            if args.params not in namespace:
                raise UsageError(f"--params {args.params}: no notebook variable "
                                 f"{args.params!r} (a list of dicts, one per job)")
            rows = namespace[args.params]
        sets = expand(args.sweep or [], rows, params_name=args.params or "params")
        check_params(definition.param_names, sets)
        return sets

    def _private(self, args: argparse.Namespace) -> Private:
        # --send-only keeps the input private, --receive-only the results.
        return "input" if args.send_only else "results" if args.receive_only else "both"

    def _run_one(self, args: argparse.Namespace, definition: JobDefinition,
                 settings: Settings, namespace: dict[str, Any],
                 credits: CreditBalance | None) -> ConfidentialJob | None:
        from .job import run_confidential

        notices = _Notices()
        job = run_confidential(
            definition, settings=settings, node=args.node, private=self._private(args),
            wait=False, env=reference_env(), namespace=namespace, on_notice=notices)
        notices.flush()
        if args.out:
            namespace[args.out] = job
        view = JobView(job, tail=self.log_tail, quiet=args.quiet).show(
            background=args.background)
        if args.background:
            # The live view shows the job; a returned handle would be a second display of it,
            # a snapshot that goes stale. The handle is in -o NAME, or `%nosana status`.
            return None
        try:
            follow(job, view, each=notices.flush)
        finally:
            # Also after a Ctrl-C (the job stopped): what was spent is part of what happened.
            if credits is not None and job.done:
                # A further Ctrl-C skips the line, never the report of how the job ended.
                with contextlib.suppress(KeyboardInterrupt):
                    self._credits_after(settings, credits)
        job.raise_for_status()
        # With -o the handle is in its variable and the view's summary shows how it ended.
        return None if args.out else job

    def _run_sweep(self, args: argparse.Namespace, definition: JobDefinition,
                   sets: list[dict[str, Any]], settings: Settings,
                   namespace: dict[str, Any]) -> Runs | None:
        """One job per parameter set, one live table; failed jobs do not fail the cell."""
        from .sweeps import DEFAULT_PARALLEL, sweep
        from .sweepview import SweepView, follow_sweep

        notices = _Notices()
        runs = sweep(definition, sets, parallel=args.parallel or DEFAULT_PARALLEL,
                     name=args.out, settings=settings, node=args.node,
                     private=self._private(args), wait=False, env=reference_env(),
                     namespace=namespace, on_notice=notices)
        notices.flush()
        if args.out:
            namespace[args.out] = runs
        view = SweepView(runs).show(background=args.background)
        if args.background:
            return None
        follow_sweep(runs, view, each=notices.flush)
        return None if args.out else runs

    def _before_listing(self, settings: Settings, *, node: str | None, assume_yes: bool,
                        jobs: int = 1) -> tuple[Settings, CreditBalance | None]:
        """What must hold before anything is pinned: the cost stated (and confirmed on a paid
        network), the credits checked. Returns the settings to list with (with credits, the
        market the cost was stated for, so the job cannot pick another) and the balance when
        credits pay."""
        if settings.pays_with == "credits":
            chosen, balance = self._confirm_credits(settings, assume_yes=assume_yes, jobs=jobs)
            if settings.market is None:
                settings = settings.with_overrides(market=chosen.address)
            return settings, balance
        if settings.network != "local":
            self._confirm_spend(settings, node=node, assume_yes=assume_yes, jobs=jobs)
        elif settings.market is not None and settings.devnode_url:
            # A devnode started by hand: ask it now, so an unknown market is one line, before
            # anything is pinned. (The service's markets are checked before it is started.)
            market = settings.market
            _with_network(settings, lambda network: network.market(market))
        return settings, None

    def _confirm_credits(self, settings: Settings, *, assume_yes: bool,
                         jobs: int = 1) -> tuple[Market, CreditBalance]:
        """The credits path: the job's most cost in USD and the balance, before listing; the
        same question as for a wallet on a paid network; too few credits list nothing."""
        from .errors import InsufficientCreditsError
        from .network.markets import CreditEstimate

        if settings.market is None and settings.network != "local":
            raise UsageError(f"--market is required on {settings.network}")

        async def query(network: Network) -> tuple[Market, CreditBalance]:
            if settings.market is not None:
                market = await network.market(settings.market)
            else:  # as the job will choose: a local market with an idle host first
                markets = await network.markets()
                market = ([m for m in markets if m.idle_hosts > 0] or markets)[0]
            return market, await _balance(network)

        market, balance = _with_network(settings, query)
        estimate = CreditEstimate(settings.network, market.slug, market.usd_per_hour_with_fee,
                                  settings.timeout, balance.available, jobs=jobs)
        print(estimate.describe())
        if not estimate.covered:
            raise InsufficientCreditsError(f"{settings.network}: {estimate.shortfall()}")
        if settings.network != "local" and not assume_yes and self.confirm_spend:
            self._confirmed(settings, f"List the {'job' if jobs == 1 else f'{jobs} jobs'} and "
                                      "spend these credits? [y/N] ")
        return market, balance

    def _credits_after(self, settings: Settings, before: CreditBalance) -> None:
        """After the job: what the credits were charged, and what is left."""
        from .network.markets import format_usd

        try:
            after = _with_network(settings, _balance)
        except NosanaError as exc:
            print(f"credits: the balance could not be read: {exc}")
            return
        print(f"credits: {format_usd(after.available)} available "
              f"({format_usd(after.settled - before.settled)} spent since this job was listed, "
              f"{format_usd(after.reserved)} still reserved)")

    def _confirmed(self, settings: Settings, prompt: str) -> None:
        """Ask; refuse (:class:`SpendNotConfirmed`) unless someone answers yes."""
        answer = self._ask(prompt)
        if answer is None:
            raise SpendNotConfirmed(
                f"not listed: nobody can confirm spending on {settings.network} in this "
                "session; pass --yes or set %config NosanaMagics.confirm_spend = False")
        if answer.strip().lower() not in ("y", "yes"):
            raise SpendNotConfirmed("not listed: spending was not confirmed")

    def _confirm_spend(
        self, settings: Settings, *, node: str | None = None, assume_yes: bool, jobs: int = 1
    ) -> None:
        """State what a paid job (or a sweep of ``jobs``) can cost; ask when someone can
        answer, refuse otherwise. One statement and one question for a whole sweep."""
        if settings.market is None:
            raise UsageError(f"--market is required on {settings.network}")
        market, detail = self._market_info(settings, node=node)
        hours = settings.timeout / 3600
        each = market.cost(settings.timeout)
        most = (f"at most {each:.6g} NOS ({hours:.3g} h" if jobs == 1 else
                f"{jobs} jobs × at most {each:.6g} NOS = at most {each * jobs:.6g} NOS "
                f"({hours:.3g} h each")
        statement = (
            f"{settings.network}: market {market.slug} at {market.nos_per_hour:.6g} NOS/h, "
            f"timeout {format_duration(settings.timeout)} → {most}, fees included)")
        print(statement)
        if detail:
            print(f"  {detail}")
        if assume_yes or not self.confirm_spend:
            return
        self._confirmed(settings, f"List the {'job' if jobs == 1 else f'{jobs} jobs'} and "
                                  "spend this? [y/N] ")

    def _ask(self, prompt: str) -> str | None:
        """``input(prompt)`` when a person can answer; ``None`` in a headless run."""
        if in_kernel():
            kernel = getattr(self.shell, "kernel", None)
            if kernel is not None and not getattr(kernel, "_allow_stdin", True):
                return None
        elif sys.stdin is None or not sys.stdin.isatty():
            return None
        try:
            return input(prompt)
        except (StdinNotImplementedError, EOFError):
            return None

    def _market_info(
        self, settings: Settings, *, node: str | None = None
    ) -> tuple[Market, str | None]:
        """The market, and the network's own cost estimate (SOL for rent and fees) if it has one."""
        assert settings.market is not None
        slug = settings.market

        async def query(network: Network) -> tuple[Market, str | None]:
            market = await network.market(slug)
            estimate = getattr(network, "estimate", None)
            if estimate is None:
                return market, None
            return market, (await estimate(market, settings.timeout, node=node)).describe()

        return _with_network(settings, query)

    # -- %nosana -------------------------------------------------------------------------

    @no_var_expand
    @magic_arguments()
    @argument("command", choices=list(_COMMANDS), help="What to do (`%%nosana help COMMAND`).")
    @argument("job", nargs="?",
              help="A job address, or a unique prefix of one (help: a command).")
    @argument("-b", "--background", action="store_true",
              help="attach: return at once; the view keeps updating.")
    @argument("-q", "--quiet", action="store_true", help="attach: status only.")
    @argument("--network", choices=["local", "devnet", "mainnet"],
              help="attach/markets/credits: the network (default: the configured one).")
    @argument("--last", type=int, default=20, metavar="N",
              help="jobs: the N latest runs (default 20).")
    @argument("--sweep", metavar="NAME", help="jobs, forget: a sweep's jobs.")
    @argument("--status", metavar="WORD",
              help="jobs: only those with this status (running: not finished).")
    @argument("--older-than", metavar="DURATION",
              help="forget: the records older than this (30d, 12h).")
    @argument("--all", action="store_true", help="forget: every record.")
    @_line_magic
    def nosana(self, line: str) -> object:
        """Jobs (of this kernel, and every run in the local store), markets and settings:
        ``%nosana COMMAND [JOB]``.

        ``JOB`` is an address or a unique prefix of one (``%nosana jobs`` lists them).
        ``%nosana`` alone prints this help, the commands included.
        """
        tokens = line.split()
        if not tokens or tokens[0] in _HELP_FLAGS:
            print(self._line_help(None))
            return None
        if _wants_help(line) and tokens[0] in _COMMANDS:
            print(self._line_help(tokens[0]))  # `%nosana stop -h`
            return None
        args = parse_argstring(self.nosana, line)
        command = _COMMANDS[args.command]
        if command.needs_job and not args.job:
            raise UsageError(f"%nosana {args.command} needs a JOB (an address or a unique "
                             "prefix)")
        return command.run(self, args)

    # -- help ----------------------------------------------------------------------------

    def _check_out_name(self, name: str) -> None:
        """``-o NAME`` must be a Python name the shell does not use itself: IPython keeps
        ``In``, ``Out``, ``get_ipython``, ``exit``, ``_``, ``_i3``, ``_7``… in the namespace,
        and replacing one breaks the shell (history, output caching, the shell's own calls)."""
        if not name.isidentifier() or iskeyword(name):
            raise UsageError(f"--out: {name!r} is not a Python identifier")
        hidden = getattr(self.shell, "user_ns_hidden", {}) if self.shell is not None else {}
        if name in hidden or _IPYTHON_NAME.fullmatch(name):
            raise UsageError(f"--out: {name!r} is a name IPython uses itself (replacing it "
                             "breaks the shell); choose another, such as run")

    def _cell_help(self) -> str:
        """``%%nosana_confidential --help``: usage, what it does, the flags, an example."""
        text = _usage_text(self.nosana_confidential.__doc__, "nosana_confidential", cell=True)
        return f"{text}\n\n{_CELL_EXAMPLE}"

    def _line_help(self, topic: str | None) -> str:
        """``%nosana help [COMMAND]``: the whole usage, or one command's."""
        if topic is not None:
            command = _COMMANDS.get(topic)
            if command is None:
                raise UsageError(f"%nosana help: unknown command {topic!r} (commands: "
                                 f"{', '.join(_COMMANDS)})")
            return f"usage: {command.usage}\n\n" + textwrap.fill(command.help, 88)
        width = max(len(command.usage) for command in _COMMANDS.values())
        commands = "\n".join(f"  {command.usage.ljust(width)}  {command.summary}"
                             for command in _COMMANDS.values())
        text = _usage_text(self.nosana.__doc__, "nosana", cell=False)
        return (f"{text}\n\ncommands:\n{commands}\n\nExample:\n  %nosana jobs\n"
                "  run = %nosana status 7xKX      # the handle of job 7xKX…\n"
                "  %nosana stop 7xKX\n\nThe cell magic: %%nosana_confidential --help")

    def _config_table(self) -> Table:
        rows = [list(row) for row in self.settings().explain()]
        rows.append(["log_tail", str(self.log_tail), self._trait_source("log_tail")])
        rows.append(["confirm_spend", str(self.confirm_spend), self._trait_source("confirm_spend")])
        return Table(["setting", "value", "source"], rows, title="nosana settings")

    def _trait_source(self, name: str) -> str:
        default = self.trait_defaults(name)
        return "default" if getattr(self, name) == default else f"%config NosanaMagics.{name}"


def _wants_help(line: str) -> bool:
    """``-h``/``--help`` anywhere on the magic line."""
    return any(token in _HELP_FLAGS for token in line.split())


def _usage_text(doc: str | None, name: str, *, cell: bool) -> str:
    """A magic's argparse-built docstring as plain help text (IPython writes every magic
    with one ``%`` in its usage line; a cell magic's has two)."""
    text = inspect.cleandoc(doc or "").removeprefix("::").strip("\n")
    usage, _, rest = text.partition("\n\n")
    usage = textwrap.dedent(usage)
    if cell:
        usage = usage.replace(f"%{name}", f"%%{name}", 1)
    return f"usage: {usage.strip()}\n\n{rest.strip()}"


async def _balance(network: Network) -> CreditBalance:
    """The credit balance of a network paid with credits (:class:`NetworkError` otherwise)."""
    from .errors import NetworkError

    read = getattr(network, "balance", None)
    if read is None or network.pays_with != "credits":
        raise NetworkError(f"{network.name} network: not paid with credits, so no balance")
    balance: CreditBalance = await read()
    return balance


def _with_network(settings: Settings,
                  query: Callable[[Network], Coroutine[Any, Any, _T]]) -> _T:
    """``query(network)`` on the network ``settings`` name, opened for this call only.

    Opened on the main thread, so the one-line notice of a local network starting now is
    printed here, in this cell.
    """
    from .network import open_network
    from .runner import run_sync

    network = open_network(settings, on_notice=print)

    async def run() -> _T:
        try:
            return await query(network)
        finally:
            await network.aclose()

    return run_sync(run(), timeout=60)


class _Notices:
    """One-line notices from the client (e.g. "started the local network at …").

    The client may call this from its loop thread, where printing would land in whichever cell
    ipykernel guesses; so notices are queued and the main thread prints them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[str] = []

    def __call__(self, message: str) -> None:
        if threading.current_thread() is threading.main_thread():
            print(message)
            return
        with self._lock:
            self._queue.append(message)

    def flush(self) -> None:
        with self._lock:
            queued, self._queue = self._queue, []
        for message in queued:
            print(message)


def register(shell: InteractiveShell) -> None:
    """Register the magics with ``shell`` (idempotent)."""
    if any(isinstance(m, NosanaMagics) for m in shell.configurables):
        return
    shell.register_magics(NosanaMagics(shell=shell))


def unregister(shell: InteractiveShell) -> None:
    """Undo :func:`register`."""
    magics: Mapping[str, dict[str, Any]] = shell.magics_manager.magics
    magics["cell"].pop("nosana_confidential", None)
    magics["line"].pop("nosana", None)
    shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, NosanaMagics)]
    shell.magics_manager.registry.pop("NosanaMagics", None)
