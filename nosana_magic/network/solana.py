"""``SolanaNetwork``: the Nosana jobs program on mainnet or devnet, with a wallet.

What it does, in the order a job needs it (docs/protocol.md §17–§21):

* markets: slug -> address (:mod:`.markets`), then the on-chain ``MarketAccount`` (price per
  second, longest timeout, vault, idle hosts in the node queue);
* before listing: the cost estimate (:meth:`SolanaNetwork.estimate`) and balance checks (SOL for
  rent and fees, the wallet's NOS token account, NOS for price x timeout) with errors that say
  what is missing and how much;
* ``post``: a fresh job and run keypair, ``list`` (``assign`` with a node) after a compute-budget
  priority fee, signed by the wallet, the job and the run keys, sent and confirmed (bounded);
* tracking: the run account at our own ``run`` address first (node-queue markets create it in
  the listing transaction), else ``getProgramAccounts`` on the run accounts of this job, plus an
  account subscription on the job (WebSocket) and bounded polling;
* ``stop`` = ``end`` for a running job (after creating the node's NOS account idempotently, as
  the SDK does), ``delist`` for a queued one; ``extend`` raises the timeout.

Every RPC call and transaction goes through :class:`~nosana_magic.network.rpc.SolanaRpc`: a
timeout per attempt, the package's retry policy, messages that name the RPC host only (RPC
URLs often carry an API key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import statistics
import struct
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from solana.rpc.commitment import Commitment
from solana.rpc.models import MemcmpOpts
from solana.rpc.websocket_api import SolanaWsClient
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from spl.token.instructions import create_idempotent_associated_token_account

from .. import chain
from ..chain import (
    ACCOUNT_DISCRIMINATORS,
    JOB_ACCOUNT_SPACE,
    RUN_ACCOUNT_SPACE,
    RUN_JOB_OFFSET,
    AccountDecodeError,
    Cluster,
    JobAccount,
    MarketAccount,
    QueueType,
    RunAccount,
)
from ..errors import InsufficientFundsError, OutcomeUnknown, TransactionFailedError
from ..protocol import b58encode, format_duration, short_address
from ..signer import Signer
from ..transport import Retry, url_host
from ..wallet import Wallet, WalletError, configured_wallet
from .base import JobInfo, JobState, Listing, Market, NetworkError
from .ipfs import DEFAULT_GATEWAY, DEFAULT_PINATA_API, PinataClient
from .markets import (
    DEFAULT_MARKETS_API,
    DEFAULT_NETWORK_FEE_PCT,
    LAMPORTS_PER_SIGNATURE,
    Estimate,
    MarketDirectory,
    estimate,
    format_nos,
    format_sol,
    priority_fee_lamports,
)
from .rpc import RPC_RETRY, SolanaRpc

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = [
    "DEFAULT_RPC_URLS",
    "NODE_DOMAINS",
    "InsufficientFundsError",
    "SolanaNetwork",
    "TransactionFailedError",
]

log = logging.getLogger(__name__)

ClusterName = Literal["mainnet", "devnet"]

#: Public RPC endpoints (rate-limited; set ``NOSANA_RPC_URL`` to your provider's URL).
DEFAULT_RPC_URLS: Mapping[str, str] = {
    "mainnet": "https://api.mainnet-beta.solana.com",
    "devnet": "https://api.devnet.solana.com",
}
#: Where hosts' node APIs and exposed services live (``https://{node}.{domain}``).
NODE_DOMAINS: Mapping[str, str] = {
    "mainnet": "node.k8s.prd.nos.ci",
    "devnet": "node.k8s.dev.nos.ci",
}

#: Priority fee bounds when it is chosen from recent fees (micro-lamports per compute unit).
MIN_PRIORITY_FEE = 10_000
MAX_PRIORITY_FEE = 1_000_000
#: Compute units granted when none are requested (what the priority fee is paid on): 200 000
#: for a program's instruction, 3 000 for a builtin one such as the compute-budget instruction.
_PROGRAM_UNITS = 200_000
_BUILTIN_UNITS = 3_000
_COMPUTE_UNITS = _PROGRAM_UNITS + _BUILTIN_UNITS

_SYSTEM = Pubkey.default()
_ZERO32 = bytes(32)

# SPL token account: mint(32) owner(32) amount(u64) ...; 165 bytes.
_TOKEN_ACCOUNT_LEN = 165


def _token_amount(data: bytes) -> int:
    return int(struct.unpack_from("<Q", data, 64)[0])


@dataclass(frozen=True)
class _Read:
    """One read of a job: its account, its run (if any) and where the run lives."""

    job: JobAccount
    run: RunAccount | None
    run_address: Pubkey | None


class _JobClosedError(NetworkError):
    """The job account does not exist (never did, or was closed by delist/recover/clean)."""


def _arguments(settings: Settings, *, pinata: bool) -> dict[str, Any]:
    """:class:`SolanaNetwork`'s keyword arguments as ``settings`` give them (with a Pinata
    client holding the JWT read now, when ``pinata``)."""
    kwargs: dict[str, Any] = {
        "cluster": settings.network,
        "rpc_url": settings.rpc_url,
        "ws_url": settings.ws_url,
        "commitment": settings.commitment,
        "priority_fee_micro_lamports": settings.priority_fee,
        "node_domain": settings.node_domain,
        "node_url_template": settings.node_url_template,
        "markets_api": settings.markets_api,
    }
    if pinata:
        kwargs["pinata"] = PinataClient(
            settings.read_pinata_jwt(),
            api_url=settings.pinata_api_url or DEFAULT_PINATA_API,
            gateway=settings.ipfs_gateway or DEFAULT_GATEWAY,
        )
    return kwargs


class SolanaNetwork:
    """The Nosana jobs program on ``mainnet`` or ``devnet``, paying with ``wallet``.

    Construction does no I/O and reads no environment: every argument left ``None`` takes the
    cluster's default (its public RPC, ``confirmed``, a priority fee chosen from recent fees,
    its node domain, Nosana's markets API; ``markets_api="off"`` keeps to the built-in list).
    :meth:`from_settings` fills them from :class:`~nosana_magic.settings.Settings`.
    """

    def __init__(
        self,
        wallet: Wallet,
        *,
        cluster: ClusterName = "mainnet",
        rpc_url: str | None = None,
        ws_url: str | None = None,
        commitment: str | None = None,
        priority_fee_micro_lamports: int | None = None,
        max_priority_fee_micro_lamports: int = MAX_PRIORITY_FEE,
        pinata: PinataClient | None = None,
        node_domain: str | None = None,
        node_url_template: str | None = None,
        markets_api: str | None = None,
        markets: MarketDirectory | None = None,
        poll_interval_s: float = 2.0,
        request_timeout_s: float = 10.0,
        retry: Retry = RPC_RETRY,
        confirm_timeout_s: float = 60.0,
        result_grace_s: float = 30.0,
        overdue_grace_s: float = 600.0,
        use_websocket: bool = True,
    ) -> None:
        if not isinstance(wallet, Wallet):
            raise WalletError(f"{cluster} needs a wallet: set NOSANA_WALLET or create "
                              "~/.nosana/nosana_key.json")
        name = cluster.strip().lower()
        if name not in DEFAULT_RPC_URLS:
            raise NetworkError(f"unknown Solana cluster {cluster!r} (use mainnet or devnet)")
        self.name: str = name
        self.cluster: Cluster = chain.cluster(name)
        self.wallet = wallet
        #: The cluster's RPC endpoint: every call and transaction goes through it.
        self.rpc = SolanaRpc(
            rpc_url or DEFAULT_RPC_URLS[name], cluster=name, ws_url=ws_url,
            commitment=commitment or "confirmed", request_timeout_s=request_timeout_s,
            retry=retry, confirm_timeout_s=confirm_timeout_s,
        )
        self.priority_fee_micro_lamports = priority_fee_micro_lamports
        self.max_priority_fee_micro_lamports = max_priority_fee_micro_lamports
        self.node_domain = node_domain or NODE_DOMAINS[name]
        template = node_url_template or f"https://{{node}}.{self.node_domain}"
        if "{node}" not in template:
            raise NetworkError(f"node URL template {template!r} has no {{node}}")
        self.node_url_template = template
        self.pinata = pinata if pinata is not None else PinataClient()
        if markets is None:
            api = DEFAULT_MARKETS_API[name] if markets_api is None else markets_api.strip()
            markets = MarketDirectory(name, api_url=None if api.lower() in ("", "off") else api)
        self.directory = markets
        self.poll_interval_s = poll_interval_s
        self.result_grace_s = result_grace_s
        self.overdue_grace_s = overdue_grace_s
        self.use_websocket = use_websocket
        self._runs: dict[str, Pubkey] = {}
        self._market_refs: dict[str, tuple[str, str, float | None]] = {}

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_settings(
        cls, settings: Settings, wallet: Wallet | None = None, **overrides: Any
    ) -> SolanaNetwork:
        """The network ``settings`` name (``devnet`` or ``mainnet``), every knob from them;
        ``overrides`` win (tests shorten waits with them).

        ``wallet`` defaults to the settings' wallet (``NOSANA_WALLET`` or the Nosana CLI's key
        file); with none, :class:`~nosana_magic.wallet.WalletError` says where to put one.
        The Pinata JWT is read from the settings' source now and kept by the Pinata client only.
        """
        if settings.network not in DEFAULT_RPC_URLS:
            raise NetworkError(f"network {settings.network!r} is not a Solana cluster "
                               "(mainnet, devnet)")
        if wallet is None:
            wallet = configured_wallet(settings)
        return cls(wallet, **{**_arguments(settings, pinata="pinata" not in overrides),
                              **overrides})

    def __repr__(self) -> str:
        return (f"SolanaNetwork({self.name}, wallet={self.wallet.address}, "
                f"rpc={self.rpc.host})")

    #: The wallet lists the job on chain and pays for it.
    pays_with = "wallet"

    async def signer(self, job: str, project: str | None = None) -> Signer:
        """The wallet: it is the project of every job it lists (docs/protocol.md §3)."""
        if project and project != self.wallet.address:
            raise NetworkError(
                f"job {job} was posted by {project}, not by this wallet "
                f"({self.wallet.address}): its host will not answer us")
        return self.wallet

    @property
    def rpc_url(self) -> str:
        return self.rpc.url

    @property
    def ws_url(self) -> str:
        return self.rpc.ws_url

    @property
    def commitment(self) -> Commitment:
        return self.rpc.commitment

    @property
    def rpc_host(self) -> str:
        return self.rpc.host

    # ------------------------------------------------------------------ Network: URLs, IPFS

    def node_url(self, node: str) -> str:
        return self.node_url_template.format(node=node)

    def service_domain(self) -> str | None:
        return self.node_domain

    async def pin(self, document: dict[str, Any]) -> str:
        return await self.pinata.pin_json(document)

    async def fetch(self, cid: str) -> Any:
        """A pinned JSON document (e.g. a send-only job's public result) from the gateway."""
        return await self.pinata.get_json(cid)

    # ------------------------------------------------------------------ markets

    def _program_account(self, account: Any, address: Pubkey, kind: str) -> bytes:
        if account.owner != self.cluster.jobs_program:
            raise NetworkError(
                f"{address} is not a Nosana {kind} on {self.name} "
                f"(owned by {short_address(str(account.owner))}, not the jobs program)"
            )
        return bytes(account.data)

    def _to_market(self, address: str, slug: str, name: str, fee: float | None,
                   acc: MarketAccount) -> Market:
        return Market(
            address=address,
            slug=slug,
            name=name or slug,
            price_per_second=acc.job_price,
            job_timeout=acc.job_timeout,
            idle_hosts=acc.idle_nodes,
            network_fee_pct=DEFAULT_NETWORK_FEE_PCT if fee is None else fee,
        )

    async def _market_account(self, address: str, label: str) -> MarketAccount:
        key = Pubkey.from_string(address)
        (account,) = await self.rpc.accounts([key], f"reading market {label}")
        if account is None:
            raise NetworkError(f"market {label} does not exist on {self.name} (no account at "
                               f"{address})")
        try:
            return MarketAccount.from_bytes(self._program_account(account, key, "market"))
        except AccountDecodeError as exc:
            raise NetworkError(f"{address} is not a Nosana market: {exc}") from None

    async def market(self, slug_or_address: str) -> Market:
        ref = await self.directory.resolve(slug_or_address)
        label = ref.slug if ref.slug == ref.address else f"{ref.slug} ({ref.address})"
        acc = await self._market_account(ref.address, label)
        self._market_refs[ref.address] = (ref.slug, ref.name, ref.network_fee_pct)
        return self._to_market(ref.address, ref.slug, ref.name, ref.network_fee_pct, acc)

    async def markets(self) -> list[Market]:
        await self.directory.refresh()
        refs = self.directory.refs()
        accounts = await self.rpc.accounts(
            [Pubkey.from_string(r.address) for r in refs], "reading the markets"
        )
        found = []
        for ref, account in zip(refs, accounts, strict=True):
            if account is None or account.owner != self.cluster.jobs_program:
                continue
            try:
                acc = MarketAccount.from_bytes(bytes(account.data))
            except AccountDecodeError:
                continue
            self._market_refs[ref.address] = (ref.slug, ref.name, ref.network_fee_pct)
            found.append(self._to_market(ref.address, ref.slug, ref.name, ref.network_fee_pct, acc))
        return found

    # ------------------------------------------------------------------ cost and balances

    async def priority_fee(self, accounts: Sequence[Pubkey] = ()) -> int:
        """Micro-lamports per compute unit: the setting, else the median of recent fees paid
        for ``accounts`` (bounded by ``MIN_PRIORITY_FEE`` and the maximum)."""
        if self.priority_fee_micro_lamports is not None:
            return self.priority_fee_micro_lamports
        try:
            resp = await self.rpc.call(
                "reading recent priority fees",
                lambda c: c.get_recent_prioritization_fees(list(accounts)),
            )
            fees = [int(f.prioritization_fee) for f in resp.value if f.prioritization_fee > 0]
        except NetworkError:
            fees = []
        chosen = int(statistics.median(fees)) if fees else MIN_PRIORITY_FEE
        return max(MIN_PRIORITY_FEE, min(chosen, self.max_priority_fee_micro_lamports))

    async def estimate(
        self, market: Market, timeout_s: int, *, node: str | None = None
    ) -> Estimate:
        """What listing a job of ``timeout_s`` in ``market`` costs at most (shown before signing).

        The run account's rent is counted when the poster creates it: a market with idle hosts
        or a job assigned to a node.
        """
        fee = await self.priority_fee([Pubkey.from_string(market.address)])
        return await self._estimate(market, timeout_s, node=node, fee=fee)

    async def _estimate(self, market: Market, timeout_s: int, *, node: str | None,
                        fee: int) -> Estimate:
        return estimate(
            market.price_per_second,
            timeout_s,
            network_fee_pct=market.network_fee_pct,
            creates_run_account=market.idle_hosts > 0 or node is not None,
            signatures=3,
            priority_micro_lamports=fee,
            compute_units=_COMPUTE_UNITS,
            rent_job=await self.rpc.rent(JOB_ACCOUNT_SPACE),
            rent_run=await self.rpc.rent(RUN_ACCOUNT_SPACE),
        )

    async def balances(self) -> tuple[int, int | None]:
        """``(lamports, NOS base units)`` of the wallet; NOS is ``None`` without a NOS account."""
        ata = chain.nos_ata(self.wallet.public_key, self.cluster.nos_mint)
        wallet_acc, ata_acc = await self.rpc.accounts(
            [self.wallet.public_key, ata], "reading the wallet's balances"
        )
        lamports = int(wallet_acc.lamports) if wallet_acc is not None else 0
        if ata_acc is None:
            return lamports, None
        data = bytes(ata_acc.data)
        if (ata_acc.owner != chain.TOKEN_PROGRAM or len(data) < _TOKEN_ACCOUNT_LEN
                or data[:32] != bytes(self.cluster.nos_mint)):
            return lamports, None
        return lamports, _token_amount(data)

    async def check_funds(self, *, lamports: int, nos_units: int, doing: str,
                          detail: str = "") -> None:
        """Raise :class:`InsufficientFundsError` unless the wallet holds ``lamports`` more than
        its own rent-exempt reserve and ``nos_units`` NOS."""
        have_sol, have_nos = await self.balances()
        who = f"wallet {short_address(str(self.wallet.address))}"
        reserve = await self.rpc.rent(0)
        need_sol = lamports + reserve
        if have_sol < need_sol:
            raise InsufficientFundsError(
                f"{who} has {format_sol(have_sol)}; {doing} needs about {format_sol(need_sol)} "
                f"({detail}{'; ' if detail else ''}keep {format_sol(reserve)} in the wallet). "
                f"Send at least {format_sol(need_sol - have_sol)} to {self.wallet.address} "
                f"on {self.name}"
            )
        if nos_units <= 0:
            return
        if have_nos is None:
            ata = chain.nos_ata(self.wallet.public_key, self.cluster.nos_mint)
            raise InsufficientFundsError(
                f"{who} has no NOS token account (expected {ata}, the associated token account "
                f"for mint {self.cluster.nos_mint}); {doing} needs {format_nos(nos_units)}. "
                f"Send NOS to {self.wallet.address} on {self.name}, which creates it"
            )
        if have_nos < nos_units:
            raise InsufficientFundsError(
                f"{who} has {format_nos(have_nos)}; {doing} needs {format_nos(nos_units)}. "
                f"Send at least {format_nos(nos_units - have_nos)} to {self.wallet.address} "
                f"on {self.name}"
            )

    # ------------------------------------------------------------------ sending

    async def _priority(self, instructions: Sequence[Instruction]) -> tuple[int, int]:
        """``(micro-lamports per compute unit, lamports)``: the priority fee a transaction of
        ``instructions`` (plus the compute-budget instruction) pays."""
        writable = [m.pubkey for ix in instructions for m in ix.accounts if m.is_writable]
        price = await self.priority_fee(writable[:128])
        units = _BUILTIN_UNITS + _PROGRAM_UNITS * len(instructions)
        return price, priority_fee_lamports(price, units)

    # ------------------------------------------------------------------ posting

    async def post(
        self, cid: str, market: Market, timeout_s: int, *, node: str | None = None
    ) -> Listing:
        """List a job (``assign`` it when ``node`` is given). This spends NOS and SOL."""
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or timeout_s < 1:
            raise NetworkError(f"timeout must be whole seconds >= 1, got {timeout_s!r}")
        if market.job_timeout and timeout_s > market.job_timeout:
            raise NetworkError(
                f"timeout {format_duration(timeout_s)} is longer than market {market.slug}'s "
                f"maximum of {format_duration(market.job_timeout)}"
            )
        market_key = Pubkey.from_string(market.address)
        acc = await self._market_account(market.address, market.slug)
        if node is not None:
            node_key = chain.as_pubkey(node, "node")
            if acc.queue_type != QueueType.NODE or node_key not in acc.queue:
                raise NetworkError(
                    f"node {node} is not waiting in market {market.slug}'s queue; a job can be "
                    "assigned only to an idle node of the market"
                )
        fresh = Market(
            address=market.address, slug=market.slug, name=market.name,
            price_per_second=acc.job_price, job_timeout=acc.job_timeout,
            idle_hosts=acc.idle_nodes, network_fee_pct=market.network_fee_pct,
        )
        fee = await self.priority_fee([market_key])
        cost = await self._estimate(fresh, timeout_s, node=node, fee=fee)
        await self.check_funds(
            lamports=cost.lamports,
            nos_units=cost.nos_units if acc.job_price else 0,
            doing=f"listing a {format_duration(timeout_s)} job in {market.slug}",
            detail=f"rent {format_sol(cost.rent)}, refunded; fees {format_sol(cost.fees)}",
        )
        job_kp, run_kp = Keypair(), Keypair()
        me = self.wallet.public_key
        program, mint = self.cluster.jobs_program, self.cluster.nos_mint
        common: dict[str, Any] = dict(
            job=job_kp.pubkey(), market=market_key, run=run_kp.pubkey(),
            user=chain.nos_ata(me, mint) if acc.job_price else acc.vault,
            vault=acc.vault, payer=me,
            rewards_reflection=chain.rewards_reflection(self.cluster.rewards_program),
            rewards_vault=chain.rewards_vault(mint, self.cluster.rewards_program),
            authority=me, ipfs_job=cid, timeout=timeout_s,
            rewards_program=self.cluster.rewards_program, program_id=program,
        )
        if node is not None:
            ix = chain.assign_instruction(node=chain.as_pubkey(node, "node"), **common)
        else:
            ix = chain.list_instruction(**common)
        job = str(job_kp.pubkey())
        try:
            signature = await self.rpc.send(
                [ix], [self.wallet.keypair, job_kp, run_kp], f"listing the job in {market.slug}",
                payer=self.wallet.public_key, fee=fee, job=job,
            )
        except TransactionFailedError:
            raise  # the cluster rejected it: nothing was listed
        except NetworkError as exc:
            # Sent but not confirmed (or not answered): the job account may exist. Its address
            # is ours, so whoever handles this can look it up.
            raise OutcomeUnknown(str(exc), job=job) from None
        self._runs[job] = run_kp.pubkey()
        return Listing(job=job, run=str(run_kp.pubkey()), tx=signature)

    # ------------------------------------------------------------------ reading jobs

    async def _find_run(self, job: Pubkey) -> tuple[Pubkey, RunAccount] | None:
        filters: list[int | MemcmpOpts] = [
            MemcmpOpts(offset=0, bytes=b58encode(ACCOUNT_DISCRIMINATORS["RunAccount"])),
            MemcmpOpts(offset=RUN_JOB_OFFSET, bytes=str(job)),
        ]
        try:
            resp = await self.rpc.call(
                "looking for the job's run account",
                lambda c: c.get_program_accounts(
                    self.cluster.jobs_program, encoding="base64", filters=filters
                ),
            )
        except NetworkError as exc:
            if "disabled" in str(exc).lower() or "excluded" in str(exc).lower():
                raise NetworkError(
                    f"Solana RPC {self.rpc_host} does not serve getProgramAccounts for the jobs "
                    "program, so a node's pick-up cannot be seen; set NOSANA_RPC_URL to an RPC "
                    "that does"
                ) from None
            raise
        for keyed in resp.value:
            try:
                run = RunAccount.from_bytes(bytes(keyed.account.data))
            except AccountDecodeError:
                continue
            if run.job == job:
                return keyed.pubkey, run
        return None

    async def _read(self, address: str) -> _Read:
        try:
            job_key = Pubkey.from_string(address.strip())
        except ValueError:
            raise NetworkError(f"{address[:60]!r} is not a Solana address") from None
        known_run = self._runs.get(str(job_key))
        keys = [job_key] + ([known_run] if known_run is not None else [])
        accounts = await self.rpc.accounts(keys, f"reading job {short_address(str(job_key))}")
        job_acc = accounts[0]
        if job_acc is None:
            raise _JobClosedError(f"no job {job_key} on {self.name} (never listed, or closed)")
        try:
            job = JobAccount.from_bytes(self._program_account(job_acc, job_key, "job"))
        except AccountDecodeError as exc:
            raise NetworkError(f"{job_key} is not a Nosana job: {exc}") from None
        if job.state != chain.JobState.QUEUED:
            return _Read(job, None, known_run)
        if known_run is not None and accounts[1] is not None:
            with contextlib.suppress(AccountDecodeError):
                if accounts[1].owner == self.cluster.jobs_program:
                    run = RunAccount.from_bytes(bytes(accounts[1].data))
                    if run.job == job_key:
                        return _Read(job, run, known_run)
        found = await self._find_run(job_key)
        if found is None:
            return _Read(job, None, known_run)
        self._runs[str(job_key)] = found[0]
        return _Read(job, found[1], found[0])

    def _info(self, address: str, read: _Read) -> JobInfo:
        job, run = read.job, read.run
        state = JobState[chain.job_state(job, run).name]
        node: str | None = None
        if run is not None:
            node = str(run.node)
        elif job.node != _SYSTEM:
            node = str(job.node)
        time_start = run.time if run is not None else (job.time_start or None)
        return JobInfo(
            address=address,
            state=state,
            market=str(job.market),
            node=node,
            project=str(job.project),
            timeout=job.timeout,
            time_start=time_start,
            time_end=job.time_end or None,
            ipfs_job=job.ipfs_job_cid,
            ipfs_result=job.ipfs_result_cid,
            price=job.price,
            extra={
                "payer": str(job.payer),
                "run": str(read.run_address) if read.run_address is not None else None,
                "cluster": self.name,
            },
        )

    async def job(self, address: str) -> JobInfo:
        return self._info(address, await self._read(address))

    # ------------------------------------------------------------------ watching

    @property
    def last_answer(self) -> float | None:
        """``time.monotonic()`` of the RPC endpoint's last answer (``None`` before the first)."""
        return self.rpc.last_answer

    async def watch(self, address: str) -> AsyncIterator[JobInfo]:
        """Yield the job at once, then on every change until it is COMPLETED or STOPPED.

        Changes are noticed through an account subscription on the job (when the WebSocket
        works) and polling every ``poll_interval_s``. A COMPLETED job without a result (ended
        by its project) is watched ``result_grace_s`` more for the node's result. A job still
        RUNNING ``overdue_grace_s`` after its timeout raises :class:`NetworkError`.
        """
        info = await self.job(address)
        yield info
        if info.state.done and (info.ipfs_result or info.state is JobState.STOPPED):
            return
        done_at: float | None = time.monotonic() if info.state.done else None
        async with _AccountSignal(self, Pubkey.from_string(address.strip())) as signal:
            while True:
                if done_at is not None and time.monotonic() - done_at >= self.result_grace_s:
                    return
                await signal.wait(self.poll_interval_s)
                try:
                    new = await self.job(address)
                except _JobClosedError:
                    # Delisted, recovered or cleaned up: the account is gone.
                    yield JobInfo(
                        address=info.address, state=JobState.STOPPED, market=info.market,
                        node=info.node, project=info.project, timeout=info.timeout,
                        time_start=info.time_start, time_end=info.time_end,
                        ipfs_job=info.ipfs_job, ipfs_result=info.ipfs_result,
                        price=info.price, extra={**info.extra, "closed": True},
                    )
                    return
                if new != info:
                    info = new
                    yield info
                if info.state.done:
                    if info.ipfs_result or info.state is JobState.STOPPED:
                        return
                    if done_at is None:
                        done_at = time.monotonic()
                elif (info.state is JobState.RUNNING and info.expires_at is not None
                      and time.time() > info.expires_at + self.overdue_grace_s):
                    raise NetworkError(
                        f"job {address} is still RUNNING on {self.name} "
                        f"{format_duration(time.time() - info.expires_at)} after its timeout; "
                        "its node may have gone away (stop it to get the unused deposit back)"
                    )

    # ------------------------------------------------------------------ stop / extend

    def _require_project(self, address: str, job: JobAccount, doing: str) -> None:
        if job.project != self.wallet.public_key:
            raise NetworkError(
                f"cannot {doing} job {address}: it belongs to project {job.project}, "
                f"not to wallet {self.wallet.address}"
            )

    async def stop(self, address: str) -> None:
        """``delist`` a queued job (full refund) or ``end`` a running one; done jobs: no-op."""
        try:
            read = await self._read(address)
        except _JobClosedError:
            return
        job = read.job
        state = chain.job_state(job, read.run)
        if state in (chain.JobState.COMPLETED, chain.JobState.STOPPED):
            return
        self._require_project(address, job, "stop")
        acc = await self._market_account(str(job.market), str(job.market))
        mint, program = self.cluster.nos_mint, self.cluster.jobs_program
        job_key = Pubkey.from_string(address.strip())
        deposit = chain.nos_ata(job.payer, mint) if job.price else acc.vault
        ixs: list[Instruction]
        if read.run is None:
            ixs = [chain.delist_instruction(
                job=job_key, market=job.market, deposit=deposit, payer=job.payer,
                vault=acc.vault, authority=self.wallet.public_key, program_id=program,
            )]
            what = "delisting the job"
        else:
            run, run_address = read.run, read.run_address
            assert run_address is not None
            node_ata = chain.nos_ata(run.node, mint) if job.price else acc.vault
            ixs = []
            if job.price:
                ixs.append(create_idempotent_associated_token_account(
                    self.wallet.public_key, run.node, mint
                ))
            ixs.append(chain.end_instruction(
                job=job_key, market=job.market, run=run_address, deposit=deposit,
                user=node_ata, vault=acc.vault, payer=run.payer,
                authority=self.wallet.public_key, program_id=program,
            ))
            what = "ending the job"
        price, priority = await self._priority(ixs)
        # Creating the node's NOS account (when it has none) costs its rent.
        rent = await self.rpc.rent(_TOKEN_ACCOUNT_LEN) if len(ixs) > 1 else 0
        await self.check_funds(
            lamports=LAMPORTS_PER_SIGNATURE + priority + rent, nos_units=0, doing=what,
            detail=f"fees {format_sol(LAMPORTS_PER_SIGNATURE + priority)}"
            + (f", rent of the node's NOS account {format_sol(rent)}" if rent else ""),
        )
        await self.rpc.send(ixs, [self.wallet.keypair], what, payer=self.wallet.public_key,
                            fee=price, job=address)

    async def extend(self, address: str, seconds: int) -> None:
        """Add ``seconds`` to the job's timeout (the program takes the new total)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
            raise NetworkError(f"extend needs whole seconds >= 1, got {seconds!r}")
        read = await self._read(address)
        job = read.job
        if job.state != chain.JobState.QUEUED:
            state = chain.job_state(job, read.run).name
            raise NetworkError(f"cannot extend job {address}: it is {state}")
        self._require_project(address, job, "extend")
        acc = await self._market_account(str(job.market), str(job.market))
        ref = self._market_refs.get(str(job.market))
        fee_pct = ref[2] if ref is not None and ref[2] is not None else DEFAULT_NETWORK_FEE_PCT
        mint, me = self.cluster.nos_mint, self.wallet.public_key
        ix = chain.extend_instruction(
            job=Pubkey.from_string(address.strip()), market=job.market,
            user=chain.nos_ata(me, mint) if job.price else acc.vault, vault=acc.vault,
            rewards_reflection=chain.rewards_reflection(self.cluster.rewards_program),
            rewards_vault=chain.rewards_vault(mint, self.cluster.rewards_program),
            authority=me, payer=me, timeout=job.timeout + seconds,
            rewards_program=self.cluster.rewards_program, program_id=self.cluster.jobs_program,
        )
        price, priority = await self._priority([ix])
        cost = estimate(job.price, seconds, network_fee_pct=fee_pct, creates_run_account=False,
                        signatures=1)
        await self.check_funds(
            lamports=cost.signature_fees + priority,
            nos_units=cost.nos_units if job.price else 0,
            doing=f"extending the job by {format_duration(seconds)}",
        )
        await self.rpc.send([ix], [self.wallet.keypair], "extending the job",
                            payer=self.wallet.public_key, fee=price, job=address)

    async def aclose(self) -> None:
        await self.rpc.aclose()
        await self.pinata.aclose()
        await self.directory.aclose()


# --------------------------------------------------------------------------- account signal


class _AccountSignal:
    """Wakes a waiter when the job account changes (``accountSubscribe``), best effort.

    When the WebSocket cannot be opened or drops, waiting simply times out (polling); it is
    reopened at most ``_RECONNECTS`` times.
    """

    _RECONNECTS = 3

    def __init__(self, network: SolanaNetwork, account: Pubkey) -> None:
        self._network = network
        self._account = account
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _AccountSignal:
        if self._network.use_websocket:
            self._task = asyncio.create_task(self._run(), name="nosana-job-subscription")
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)

    async def wait(self, timeout_s: float) -> bool:
        """True when the account changed, False after ``timeout_s``."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    async def _run(self) -> None:
        net = self._network
        first = max(0.01, net.poll_interval_s * 2)
        # Bounded in connections, not in time: the subscription lives as long as the watch.
        backoff = Retry(first=first, cap=max(first, 30.0), attempts=self._RECONNECTS,
                        total=math.inf).backoff()
        while True:
            ws = SolanaWsClient(net.ws_url, request_timeout=net.rpc.request_timeout_s,
                                open_timeout=net.rpc.request_timeout_s, close_timeout=2.0)
            try:
                await ws.connect()
                await ws.account_subscribe(pubkey=self._account, commitment=net.commitment,
                                           encoding="base64")
                while True:
                    await ws.recv()
                    self._event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # polling carries on without it
                log.debug("job subscription on %s ended: %s", url_host(net.ws_url),
                          type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 3)
            if not await backoff.wait():
                return
