"""IPython magics: ``%%nosana_confidential`` (run a confidential job) and ``%nosana …``.

Registered by ``%load_ext nosana_magic`` (``load_ipython_extension`` → :func:`register`), never
at import time.

Settings precedence, highest first:

1. a flag on the magic line (``--market``, ``--timeout``, ``--network``, ``--node``);
2. a ``%config NosanaMagics.<trait>`` value (or ``c.NosanaMagics.<trait>`` in a config file);
3. the environment (``NOSANA_NETWORK``, ``NOSANA_MARKET``, ``NOSANA_TIMEOUT``,
   ``NOSANA_DEVNODE_URL``, ``NOSANA_NODE_URL_TEMPLATE``, ``NOSANA_RPC_URL``, ``NOSANA_WALLET``);
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
from .errors import SpendNotConfirmed
from .protocol import DurationError, format_duration, parse_duration
from .settings import reference_env

if TYPE_CHECKING:
    from .job import ConfidentialJob, Private
    from .network.base import Market, Network
    from .settings import Settings

__all__ = ["NosanaMagics", "SpendNotConfirmed", "register", "unregister"]


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


@_command("jobs", "%nosana jobs", "this kernel's jobs")
def _jobs(magics: NosanaMagics, args: argparse.Namespace) -> Table:
    """The jobs of this kernel: address, network, market, status, elapsed time."""
    from .job import jobs

    rows = [[job.address or "(not listed)", job.network_name,
             job.market.slug if job.market is not None else "", job.status,
             "" if job.elapsed is None else format_duration(job.elapsed)]
            for job in jobs()]
    return Table(["job", "network", "market", "status", "elapsed"], rows,
                 title="nosana jobs in this kernel", empty="no jobs yet in this kernel")


@_command("status", "%nosana status [JOB]", "a job's handle")
def _status(magics: NosanaMagics, args: argparse.Namespace) -> ConfidentialJob:
    """The job's handle, shown as its table (default: this kernel's latest job).
    `run = %nosana status JOB` keeps it in a variable."""
    from .job import JobNotFound, find_job, jobs

    if args.job:
        return find_job(args.job)  # JobNotFound: one line naming the reference
    known = jobs()
    if not known:
        raise JobNotFound("no job yet in this kernel")
    return known[-1]


@_command("logs", "%nosana logs JOB", "print a job's log", needs_job=True)
def _logs(magics: NosanaMagics, args: argparse.Namespace) -> None:
    """Every log line of the job so far (container stderr on stderr, the host's own lines
    marked `host:`)."""
    from .job import find_job

    for line in find_job(args.job).logs:
        stream = sys.stderr if line.stream == "stderr" else sys.stdout
        prefix = f"[{line.op_id}] " if line.op_id else ""
        print(prefix + line.text.rstrip("\n"), file=stream)


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
    when it ends. -b returns at once (then `run = %nosana status JOB` gets the handle), -q
    shows the status only."""
    from .job import ConfidentialJob, JobNotFound, find_job

    notices = _Notices()
    try:
        job = find_job(args.job)
    except JobNotFound:
        # Started in another kernel (or before a restart) with the same wallet.
        job = ConfidentialJob.attach(args.job, magics.settings(network=args.network),
                                     on_notice=notices)
    notices.flush()
    view = JobView(job, tail=magics.log_tail, quiet=args.quiet).show(background=args.background)
    if args.background:
        return None  # the live view shows it (`run = %nosana status JOB` gets the handle)
    follow(job, view, each=notices.flush)
    job.raise_for_status()
    return job


@_command("markets", "%nosana markets [--network NETWORK]", "a network's markets")
def _markets(magics: NosanaMagics, args: argparse.Namespace) -> Table:
    """The markets of a network: address, price per hour, idle hosts."""
    settings = magics.settings(network=args.network)
    markets = _with_network(settings, lambda network: network.markets())
    rows = [[m.slug, m.address, f"{m.nos_per_hour:.6g}", str(m.idle_hosts)] for m in markets]
    return Table(["market", "address", "NOS/h", "idle hosts"], rows,
                 title=f"markets on {settings.network}")


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
                             "node_url_template", "rpc_url", "local_idle")
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
    @_cell_magic
    def nosana_confidential(self, line: str, cell: str) -> ConfidentialJob | None:
        """Run the cell's Nosana job definition (JSON, comments allowed) as a confidential job.

        The public placeholder goes to IPFS; the real definition (``${env:NAME}`` and
        ``${var:NAME}`` resolved only now) goes straight to the host that takes the job.
        Logs stream into the cell's live view; the job handle (``.results``, ``.urls``,
        ``.ops``, ``.logs``, ``.status``, ``.stop()``, ...) goes into the ``-o NAME``
        variable, or, without ``-o``, is the cell's result once the job has ended. The cell
        waits for the job unless ``-b``: an interrupt (Ctrl-C, the stop button) then stops
        the job. A job that did not succeed fails the cell, in one line.

        The default network is the embedded local one, which also takes Nosana's market
        names (``nvidia-3090`` runs on ``local-gpu``): the same cell runs on mainnet with
        ``--network mainnet``. Settings: a flag wins over ``%config NosanaMagics.<name>``,
        which wins over the ``NOSANA_*`` environment variables; ``%nosana config`` shows each
        with its source. ``%%nosana_confidential --help`` prints this.
        """
        from .job import run_confidential
        from .jobdef import parse_job_definition

        if _wants_help(line):
            print(self._cell_help())
            return None  # help only: the body is not run
        args = parse_argstring(self.nosana_confidential, line)
        if args.send_only and args.receive_only:
            raise UsageError("--send-only and --receive-only exclude each other")
        if args.out is not None and (not args.out.isidentifier() or iskeyword(args.out)):
            raise UsageError(f"--out: {args.out!r} is not a Python identifier")
        timeout = None
        if args.timeout is not None:
            try:
                timeout = parse_duration(args.timeout)
            except DurationError as err:
                raise UsageError(f"--timeout: {err}") from None

        if not cell.strip():
            raise UsageError("the cell is empty: put a Nosana job definition (JSON) under "
                             "the %%nosana_confidential line")
        # Line 1 is the magic's own line: locations are the lines the notebook shows.
        definition = parse_job_definition(cell, first_line=2)
        for warning in definition.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for note in definition.notes:
            print(f"note: {note}", file=sys.stderr)
        namespace = self.shell.user_ns if self.shell is not None else {}
        # Every reference must resolve before anything is pinned or listed.
        definition.check_references(env=reference_env(), namespace=namespace)

        settings = self.settings(network=args.network, market=args.market, timeout=timeout)
        if settings.network != "local":
            self._confirm_spend(settings, node=args.node, assume_yes=args.yes)
        elif settings.market is not None and settings.devnode_url:
            # A devnode started by hand: ask it now, so an unknown market is one line, before
            # anything is pinned. (The service's markets are checked before it is started.)
            market = settings.market
            _with_network(settings, lambda network: network.market(market))

        notices = _Notices()
        # --send-only keeps the input private, --receive-only the results.
        private: Private = (
            "input" if args.send_only else "results" if args.receive_only else "both")
        job = run_confidential(
            definition, settings=settings, node=args.node, private=private, wait=False,
            env=reference_env(), namespace=namespace, on_notice=notices)
        notices.flush()
        if args.out:
            namespace[args.out] = job
        view = JobView(job, tail=self.log_tail, quiet=args.quiet).show(
            background=args.background)
        if args.background:
            # The live view shows the job; a returned handle would be a second display of it,
            # a snapshot that goes stale. The handle is in -o NAME, or `%nosana status`.
            return None
        follow(job, view, each=notices.flush)
        job.raise_for_status()
        # With -o the handle is in its variable and the view's summary shows how it ended.
        return None if args.out else job

    def _confirm_spend(
        self, settings: Settings, *, node: str | None = None, assume_yes: bool
    ) -> None:
        """State what a paid job can cost; ask when someone can answer, refuse otherwise."""
        if settings.market is None:
            raise UsageError(f"--market is required on {settings.network}")
        market, detail = self._market_info(settings, node=node)
        hours = settings.timeout / 3600
        statement = (
            f"{settings.network}: market {market.slug} at {market.nos_per_hour:.6g} NOS/h, "
            f"timeout {format_duration(settings.timeout)} → at most "
            f"{market.cost(settings.timeout):.6g} NOS ({hours:.3g} h, fees included)")
        print(statement)
        if detail:
            print(f"  {detail}")
        if assume_yes or not self.confirm_spend:
            return
        answer = self._ask("List the job and spend this? [y/N] ")
        if answer is None:
            raise SpendNotConfirmed(
                f"not listed: nobody can confirm spending on {settings.network} in this "
                "session; pass --yes or set %config NosanaMagics.confirm_spend = False")
        if answer.strip().lower() not in ("y", "yes"):
            raise SpendNotConfirmed("not listed: spending was not confirmed")

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
              help="attach/markets: the network (default: the configured one).")
    @_line_magic
    def nosana(self, line: str) -> object:
        """Jobs of this kernel, markets and settings: ``%nosana COMMAND [JOB]``.

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
