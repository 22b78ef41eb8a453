"""A Solana cluster in memory: LiteSVM for system and SPL token state, the Nosana jobs program
emulated from its client instructions as docs/protocol.md §18 states them.

No compiled jobs program exists offline, so its client instructions (``list``, ``assign``,
``end``, ``extend``, ``delist``) are emulated here: decoded with ``nosana_magic.chain``,
signers and account constraints checked, NOS moved between real SPL token accounts (the
``amount`` field of the token accounts is rewritten, so balances really move), and job/run
accounts written with the real layouts, owned by the jobs program id. Every other instruction
of a transaction (compute budget, system, token, associated token account) runs in LiteSVM.

A transaction is all or nothing, like preflight: the accounts it names are snapshot first and
restored when any instruction fails, and the failure comes back with program logs in the shape
Anchor writes them. The node side (``work``, ``finish``, ``complete``, ``quit``) is exposed as
plain methods for the devnode bridge and scenario tests.

Thread safety: every public method takes the chain's lock. Listeners (the fake RPC's account
subscriptions) are called with the changed addresses after each change, under the lock; they
must not block.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from solders.account import Account
from solders.clock import Clock
from solders.hash import Hash
from solders.instruction import CompiledInstruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from nosana_magic import chain
from nosana_magic.chain import (
    JOB_ACCOUNT_SPACE,
    RUN_ACCOUNT_SPACE,
    JobAccount,
    MarketAccount,
    QueueType,
    RunAccount,
)

__all__ = ["FakeChain", "RpcError", "TxRecord"]

TOKEN_ACCOUNT_LEN = 165
MINT_LEN = 82
SYSTEM = Pubkey.default()

# Anchor framework error numbers (anchor-lang) and the jobs program's own names; the jobs
# program's numbers are illustrative (two enums both start at 6000: docs/protocol.md §17).
_ANCHOR_ERRORS = {
    "ConstraintSigner": (2002, "A signer constraint was violated"),
    "ConstraintRaw": (2003, "A raw constraint was violated"),
    "ConstraintAddress": (2012, "An address constraint was violated"),
    "ConstraintTokenOwner": (2015, "A token owner constraint was violated"),
    "AccountNotInitialized": (3012, "The program expected this account to be already initialized"),
    "AccountOwnedByWrongProgram": (
        3007, "The given account is owned by a different program than expected"
    ),
    "JobInWrongState": (6016, "This job does not have the right status"),
    "JobTimeoutNotGreater": (6018, "The job timeout should be larger than the current one"),
    "NotInMarketQueue": (6021, "This job is not in the MarketAccount queue"),
    "MarketInWrongState": (6015, "This market does not have the right status"),
    "NodeNotInMarketQueue": (6023, "This node is not in the MarketAccount queue"),
}


class RpcError(Exception):
    """A JSON-RPC error the fake server returns as ``{"code", "message", "data"}``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class _ProgramFailure(Exception):
    def __init__(self, logs: list[str], err: Any) -> None:
        super().__init__(logs[-1] if logs else "failed")
        self.logs = logs
        self.err = err


@dataclass
class TxRecord:
    """A landed transaction: what the client sent, as the chain saw it."""

    signature: str
    slot: int
    instructions: list[str]
    signers: list[str]
    logs: list[str]
    fee_payer: str
    compute_unit_price: int | None = None
    jobs: list[dict[str, Any]] = field(default_factory=list)


def token_account_bytes(mint: Pubkey, owner: Pubkey, amount: int) -> bytes:
    """An initialized SPL token account (165 bytes)."""
    return (
        bytes(mint) + bytes(owner) + struct.pack("<Q", amount)
        + bytes(36)  # delegate: COption None
        + b"\x01"  # state: initialized
        + bytes(12)  # is_native: None
        + struct.pack("<Q", 0)  # delegated_amount
        + bytes(36)  # close_authority: None
    )


def mint_bytes(authority: Pubkey, supply: int, decimals: int) -> bytes:
    return (
        struct.pack("<I", 1) + bytes(authority) + struct.pack("<Q", supply)
        + bytes([decimals, 1]) + bytes(36)
    )


class FakeChain:
    """One cluster (``mainnet`` or ``devnet`` addresses) with the jobs program emulated.

    ``network_fee_pct``: the network fee the emulated program sends to the rewards vault at
    ``list``/``extend`` (0 in current program source, 10 in older builds).
    """

    def __init__(self, cluster: str = "mainnet", *, network_fee_pct: float = 0.0) -> None:
        self.cluster = chain.cluster(cluster)
        self.program = self.cluster.jobs_program
        self.mint = self.cluster.nos_mint
        self.network_fee_pct = network_fee_pct
        self.lock = threading.RLock()
        self.svm = LiteSVM().with_sigverify(False)  # signatures are verified here, once
        self.slot = 1000
        self.statuses: dict[str, tuple[int, Any]] = {}
        self.transactions: list[TxRecord] = []
        self.fee_rates: list[int] = []
        self._listeners: list[Callable[[list[Pubkey]], None]] = []
        self._sync_clock()
        self.mint_authority = Keypair()
        self._set(self.mint, mint_bytes(self.mint_authority.pubkey(), 0, 6), chain.TOKEN_PROGRAM)
        self.rewards_vault = chain.rewards_vault(self.mint, self.cluster.rewards_program)
        self._set(self.rewards_vault,
                  token_account_bytes(self.mint, self.rewards_vault, 0), chain.TOKEN_PROGRAM)

    # ------------------------------------------------------------------ plumbing

    def on_change(self, listener: Callable[[list[Pubkey]], None]) -> Callable[[], None]:
        with self.lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self.lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return remove

    def _notify(self, keys: Iterable[Pubkey]) -> None:
        changed = list(dict.fromkeys(keys))
        if changed:
            for listener in list(self._listeners):
                listener(changed)

    def _sync_clock(self) -> None:
        now = int(time.time())
        self.svm.set_clock(Clock(self.slot, now, 0, 0, now))

    def now(self) -> int:
        return int(time.time())

    def get(self, key: Pubkey) -> Account | None:
        with self.lock:
            account = self.svm.get_account(key)
            return account if account is not None and account.lamports > 0 else None

    def _set(self, key: Pubkey, data: bytes, owner: Pubkey, lamports: int | None = None) -> None:
        if lamports is None:
            lamports = self.svm.minimum_balance_for_rent_exemption(len(data))
        self.svm.set_account(key, Account(lamports, data, owner, False, 0))

    def _delete(self, key: Pubkey) -> None:
        self.svm.set_account(key, Account(0, b"", SYSTEM, False, 0))

    def rent(self, size: int) -> int:
        return int(self.svm.minimum_balance_for_rent_exemption(size))

    def latest_blockhash(self) -> Hash:
        with self.lock:
            return self.svm.latest_blockhash()

    # ------------------------------------------------------------------ setup helpers

    def fund_sol(self, owner: Pubkey, lamports: int) -> None:
        """Set ``owner``'s SOL balance (a system account)."""
        with self.lock:
            self._set(owner, b"", SYSTEM, lamports)
            self._notify([owner])

    def sol(self, owner: Pubkey) -> int:
        account = self.get(owner)
        return 0 if account is None else int(account.lamports)

    def create_nos_account(self, owner: Pubkey, amount: int = 0,
                           address: Pubkey | None = None) -> Pubkey:
        """Create ``owner``'s NOS token account (its ATA by default) holding ``amount`` units."""
        with self.lock:
            key = address or chain.nos_ata(owner, self.mint)
            self._set(key, token_account_bytes(self.mint, owner, amount), chain.TOKEN_PROGRAM)
            self._adjust_supply(amount)
            self._notify([key])
            return key

    def nos(self, owner_or_account: Pubkey) -> int | None:
        """NOS units in a token account, or in ``owner``'s ATA; ``None`` if it does not exist."""
        with self.lock:
            for key in (owner_or_account, chain.nos_ata(owner_or_account, self.mint)):
                account = self.get(key)
                if account is not None and account.owner == chain.TOKEN_PROGRAM:
                    return int(struct.unpack_from("<Q", bytes(account.data), 64)[0])
            return None

    def _adjust_supply(self, delta: int) -> None:
        account = self.svm.get_account(self.mint)
        assert account is not None
        data = bytearray(bytes(account.data))
        supply = struct.unpack_from("<Q", data, 36)[0] + delta
        struct.pack_into("<Q", data, 36, supply)
        self._set(self.mint, bytes(data), chain.TOKEN_PROGRAM, account.lamports)

    def add_market(
        self,
        *,
        price: int,
        job_timeout: int = 24 * 3600,
        nodes: Sequence[Pubkey] = (),
        address: Pubkey | None = None,
        job_expiration: int = 86400,
    ) -> Pubkey:
        """A market (at ``address`` or a fresh one) with its vault token account.

        ``nodes`` wait in the node queue, so a job listed there starts at once.
        """
        with self.lock:
            key = address or Keypair().pubkey()
            vault = chain.market_vault(key, self.mint, self.program)
            bump = Pubkey.find_program_address([bytes(key), bytes(self.mint)], self.program)[1]
            acc = MarketAccount(
                authority=Keypair().pubkey(), job_expiration=job_expiration, job_price=price,
                job_timeout=job_timeout, job_type=4, vault=vault, vault_bump=bump,
                node_access_key=SYSTEM, node_xnos_minimum=0,
                queue_type=QueueType.NODE if nodes else QueueType.EMPTY, queue=list(nodes),
            )
            self._write_market(key, acc)
            self._set(vault, token_account_bytes(self.mint, vault, 0), chain.TOKEN_PROGRAM)
            self._notify([key, vault])
            return key

    def _write_market(self, key: Pubkey, acc: MarketAccount) -> None:
        self._set(key, acc.to_bytes(pad_to=chain.MARKET_ACCOUNT_SPACE), self.program)

    def market(self, key: Pubkey) -> MarketAccount:
        account = self.get(key)
        assert account is not None, f"no market {key}"
        return MarketAccount.from_bytes(bytes(account.data))

    def job(self, key: Pubkey) -> JobAccount | None:
        account = self.get(key)
        if account is None or account.owner != self.program:
            return None
        return JobAccount.from_bytes(bytes(account.data))

    def run_for(self, job: Pubkey) -> tuple[Pubkey, RunAccount] | None:
        with self.lock:
            for key, account in self.svm.get_program_accounts(self.program):
                data = bytes(account.data)
                if account.lamports and data[:8] == chain.ACCOUNT_DISCRIMINATORS["RunAccount"]:
                    run = RunAccount.from_bytes(data)
                    if run.job == job:
                        return key, run
            return None

    def program_accounts(self, program: Pubkey) -> list[tuple[Pubkey, Account]]:
        with self.lock:
            return [(k, a) for k, a in self.svm.get_program_accounts(program) if a.lamports]

    # ------------------------------------------------------------------ transactions

    def send(self, raw: bytes) -> str:
        """Process a signed transaction (preflight semantics); its signature, or RpcError."""
        try:
            tx = VersionedTransaction.from_bytes(raw)
        except Exception:  # anything unparsable is the client's fault
            raise RpcError(-32602, "invalid transaction: failed to deserialize") from None
        message = tx.message
        if not isinstance(message, MessageV0):
            raise RpcError(-32602, "this fake cluster accepts v0 transactions only")
        if list(message.address_table_lookups):
            raise RpcError(-32602, "this fake cluster does not load address lookup tables")
        if not all(tx.verify_with_results()):
            raise RpcError(-32003, "Transaction signature verification failure")
        signature = str(tx.signatures[0])
        with self.lock:
            if signature in self.statuses:
                raise _preflight("AlreadyProcessed",
                                 "This transaction has already been processed", [])
            self._sync_clock()
            keys = list(message.account_keys)
            snapshot = {key: self.svm.get_account(key) for key in keys}
            jobs_ixs: list[tuple[int, CompiledInstruction]] = []
            others: list[CompiledInstruction] = []
            for index, ix in enumerate(message.instructions):
                if keys[ix.program_id_index] == self.program:
                    jobs_ixs.append((index, ix))
                else:
                    others.append(ix)
            # Everything but the jobs program runs in LiteSVM, with the original header, so
            # fees (5000 lamports per signature, the priority fee) are charged as on a cluster.
            inner = MessageV0(message.header, keys, message.recent_blockhash, others, [])
            count = message.header.num_required_signatures
            inner_tx = VersionedTransaction.populate(
                inner, [Signature.new_unique() for _ in range(count)]
            )
            result = self.svm.send_transaction(inner_tx)
            if isinstance(result, FailedTransactionMetadata):
                self._restore(snapshot)
                raise _preflight(_err_json(result.err()), _err_text(result.err()),
                                 list(result.meta().logs()))
            logs = list(result.logs())
            # LiteSVM charged the priority fee on the compute units of what it ran; the jobs
            # program's instructions would have added 200 000 units each.
            price = _cu_price(message, keys) or 0
            extra = -(-price * 200_000 * len(jobs_ixs) // 1_000_000)
            if extra:
                self._set(keys[0], b"", SYSTEM, max(0, self.sol(keys[0]) - extra))
            records: list[dict[str, Any]] = []
            try:
                for index, ix in jobs_ixs:
                    records.append(self._emulate(message, keys, index, ix, logs))
            except _ProgramFailure as failure:
                self._restore(snapshot)
                raise _preflight(failure.err, _err_text_json(failure.err), logs) from None
            self.slot += 1
            self.statuses[signature] = (self.slot, None)
            self.transactions.append(TxRecord(
                signature=signature, slot=self.slot,
                instructions=[_ix_name(keys[ix.program_id_index], bytes(ix.data), self.program)
                              for ix in message.instructions],
                signers=[str(k) for k in keys[:count]], logs=logs, fee_payer=str(keys[0]),
                compute_unit_price=_cu_price(message, keys), jobs=records,
            ))
            changed = [k for k in keys if _differs(snapshot[k], self.svm.get_account(k))]
            self._notify(changed)
            return signature

    def _restore(self, snapshot: dict[Pubkey, Account | None]) -> None:
        for key, account in snapshot.items():
            if account is None:
                self._delete(key)
            else:
                self.svm.set_account(key, account)

    # ------------------------------------------------------------------ the jobs program

    def _emulate(self, message: MessageV0, keys: list[Pubkey], index: int,
                 ix: CompiledInstruction, logs: list[str]) -> dict[str, Any]:
        program = str(self.program)
        logs.append(f"Program {program} invoke [1]")
        try:
            decoded = chain.decode_instruction(bytes(ix.data))
        except chain.InstructionDecodeError:
            logs.append("Program log: AnchorError occurred. Error Code: "
                        "InstructionFallbackNotFound. Error Number: 101. Error Message: "
                        "Fallback functions are not supported.")
            logs.append(f"Program {program} failed: custom program error: 0x65")
            raise _ProgramFailure(logs, {"InstructionError": [index, {"Custom": 101}]}) from None
        metas = [keys[i] for i in ix.accounts]
        accounts = chain.account_map(decoded.name, metas)
        signers = {keys[i] for i in ix.accounts if message.is_signer(i)}
        logs.append(f"Program log: Instruction: {decoded.name.capitalize()}")
        ctx = _Ctx(self, index, logs, accounts, signers)
        handler = getattr(self, f"_ix_{decoded.name}")
        handler(ctx, decoded.args)
        logs.append(f"Program {program} consumed 25000 of 200000 compute units")
        logs.append(f"Program {program} success")
        return {"name": decoded.name, "accounts": {k: str(v) for k, v in accounts.items()},
                "args": {k: (v.hex() if isinstance(v, bytes) else v)
                         for k, v in decoded.args.items()}}

    def _ix_list(self, ctx: _Ctx, args: dict[str, Any], *, node: Pubkey | None = None) -> None:
        a = ctx.accounts
        for name in ("job", "run", "payer", "authority"):
            ctx.require_signer(name)
        if self.get(a["job"]) is not None:
            ctx.runtime_fail(f"Allocate: account Address {{ address: {a['job']}, base: None }} "
                             "already in use", 0)
        market = ctx.market(a["market"], writable=True)
        ctx.require(a["vault"] == market.vault, "ConstraintAddress", "vault")
        ctx.require(a["rewards_reflection"] == chain.rewards_reflection(
            self.cluster.rewards_program), "ConstraintAddress", "rewards_reflection")
        ctx.require(a["rewards_vault"] == self.rewards_vault, "ConstraintAddress",
                    "rewards_vault")
        price = market.job_price
        if price:
            ctx.token_account(a["user"], "user", owner=a["payer"])
        timeout = int(args["timeout"])
        queue = list(market.queue)
        queue_type = market.queue_type
        run_node: Pubkey | None = None
        if node is not None:
            ctx.require(market.queue_type == QueueType.NODE and node in queue,
                        "NodeNotInMarketQueue", "node")
            queue.remove(node)
            run_node = node
        elif market.queue_type == QueueType.NODE and queue:
            run_node = queue.pop(0)
        else:
            queue.append(a["job"])
            queue_type = QueueType.JOB
        if not queue:
            queue_type = QueueType.EMPTY
        now = self.now()
        ctx.pay_rent(a["payer"], a["job"], JOB_ACCOUNT_SPACE)
        job = JobAccount(
            ipfs_job=bytes(args["ipfs_job"]), ipfs_result=bytes(32), market=a["market"],
            node=SYSTEM, payer=a["payer"], price=price, project=a["authority"], state=0,
            time_end=0, time_start=0, timeout=timeout,
        )
        self._set(a["job"], job.to_bytes(pad_to=JOB_ACCOUNT_SPACE), self.program)
        if run_node is not None:
            run_acc = self.get(a["run"])
            ctx.require(run_acc is None, "ConstraintRaw", "run")
            ctx.pay_rent(a["payer"], a["run"], RUN_ACCOUNT_SPACE)
            run = RunAccount(job=a["job"], node=run_node, payer=a["payer"], state=0, time=now)
            self._set(a["run"], run.to_bytes(pad_to=RUN_ACCOUNT_SPACE), self.program)
        self._write_market(a["market"], _with_queue(market, queue, queue_type))
        if price:
            deposit = price * timeout
            ctx.transfer(a["user"], a["vault"], deposit)
            fee = int(deposit * self.network_fee_pct / 100)
            if fee:
                ctx.transfer(a["user"], self.rewards_vault, fee)

    def _ix_assign(self, ctx: _Ctx, args: dict[str, Any]) -> None:
        self._ix_list(ctx, args, node=ctx.accounts["node"])

    def _ix_end(self, ctx: _Ctx, args: dict[str, Any]) -> None:
        a = ctx.accounts
        ctx.require_signer("authority")
        job = ctx.job(a["job"])
        ctx.require(job.project == a["authority"], "ConstraintRaw", "authority")
        run_acc = self.get(a["run"])
        ctx.require(run_acc is not None and run_acc.owner == self.program,
                    "AccountNotInitialized", "run")
        assert run_acc is not None
        run = RunAccount.from_bytes(bytes(run_acc.data))
        ctx.require(run.job == a["job"] and job.state == 0, "JobInWrongState", "job")
        market = ctx.market(a["market"])
        ctx.require(a["vault"] == market.vault, "ConstraintAddress", "vault")
        ctx.require(a["payer"] == run.payer, "ConstraintAddress", "payer")
        now = self.now()
        if job.price:
            ctx.require(a["deposit"] == chain.nos_ata(job.payer, self.mint), "ConstraintAddress",
                        "deposit")
            ctx.token_account(a["user"], "user", owner=run.node)
            used = job.price * max(0, min(now - run.time, job.timeout))
            ctx.transfer(a["vault"], a["user"], used)
            ctx.transfer(a["vault"], a["deposit"], job.price * job.timeout - used)
        ctx.close(a["run"], a["payer"])
        done = _replace_job(job, state=2, node=run.node, time_start=run.time, time_end=now)
        self._set(a["job"], done.to_bytes(pad_to=JOB_ACCOUNT_SPACE), self.program,
                  self.get(a["job"]).lamports)  # type: ignore[union-attr]

    def _ix_extend(self, ctx: _Ctx, args: dict[str, Any]) -> None:
        a = ctx.accounts
        ctx.require_signer("authority")
        ctx.require_signer("payer")
        job = ctx.job(a["job"])
        ctx.require(job.project == a["authority"], "ConstraintRaw", "authority")
        ctx.require(job.state == 0, "JobInWrongState", "job")
        timeout = int(args["timeout"])
        ctx.require(timeout > job.timeout, "JobTimeoutNotGreater", "job")
        market = ctx.market(a["market"])
        ctx.require(a["vault"] == market.vault, "ConstraintAddress", "vault")
        if job.price:
            ctx.token_account(a["user"], "user", owner=a["payer"])
            extra = job.price * (timeout - job.timeout)
            ctx.transfer(a["user"], a["vault"], extra)
            fee = int(extra * self.network_fee_pct / 100)
            if fee:
                ctx.transfer(a["user"], self.rewards_vault, fee)
        longer = _replace_job(job, timeout=timeout)
        self._set(a["job"], longer.to_bytes(pad_to=JOB_ACCOUNT_SPACE), self.program,
                  self.get(a["job"]).lamports)  # type: ignore[union-attr]

    def _ix_delist(self, ctx: _Ctx, args: dict[str, Any]) -> None:
        a = ctx.accounts
        ctx.require_signer("authority")
        job = ctx.job(a["job"])
        ctx.require(job.project == a["authority"], "ConstraintRaw", "authority")
        ctx.require(a["payer"] == job.payer, "ConstraintAddress", "payer")
        market = ctx.market(a["market"], writable=True)
        ctx.require(market.queue_type == QueueType.JOB, "MarketInWrongState", "market")
        ctx.require(a["job"] in market.queue, "NotInMarketQueue", "job")
        ctx.require(a["vault"] == market.vault, "ConstraintAddress", "vault")
        queue = [k for k in market.queue if k != a["job"]]
        self._write_market(a["market"], _with_queue(
            market, queue, QueueType.JOB if queue else QueueType.EMPTY))
        if job.price:
            ctx.require(a["deposit"] == chain.nos_ata(job.payer, self.mint), "ConstraintAddress",
                        "deposit")
            ctx.transfer(a["vault"], a["deposit"], job.price * job.timeout)
        ctx.close(a["job"], a["payer"])

    # ------------------------------------------------------------------ the node side

    def node_work(self, market_key: Pubkey, node: Pubkey) -> Pubkey | None:
        """A node asks for work: takes the first queued job (returns it) or joins the queue."""
        with self.lock:
            market = self.market(market_key)
            if market.queue_type == QueueType.JOB and market.queue:
                job_key, *rest = market.queue
                run_key = Keypair().pubkey()
                run = RunAccount(job=job_key, node=node, payer=node, state=0, time=self.now())
                self._set(run_key, run.to_bytes(pad_to=RUN_ACCOUNT_SPACE), self.program)
                self._write_market(market_key, _with_queue(
                    market, rest, QueueType.JOB if rest else QueueType.EMPTY))
                self._notify([market_key, run_key])
                return job_key
            if node not in market.queue:
                self._write_market(market_key, _with_queue(
                    market, [*market.queue, node], QueueType.NODE))
                self._notify([market_key])
            return None

    def node_finish(self, job_key: Pubkey, result: bytes | None = None) -> None:
        """The node posts its result: COMPLETED, node paid for the time used, rest refunded."""
        self._node_done(job_key, 2, result if result is not None else hashlib.sha256(
            bytes(job_key)).digest())

    def node_quit(self, job_key: Pubkey) -> None:
        """The node gives up: STOPPED, the run account closes."""
        self._node_done(job_key, 3, None)

    def node_complete(self, job_key: Pubkey, result: bytes) -> None:
        """After ``end``: the node posts the result of a job its project stopped."""
        with self.lock:
            job = self.job(job_key)
            assert job is not None and job.state == 2
            account = self.get(job_key)
            assert account is not None
            self._set(job_key, _replace_job(job, ipfs_result=result).to_bytes(
                pad_to=JOB_ACCOUNT_SPACE), self.program, account.lamports)
            self._notify([job_key])

    def _node_done(self, job_key: Pubkey, state: int, result: bytes | None) -> None:
        with self.lock:
            job = self.job(job_key)
            found = self.run_for(job_key)
            assert job is not None and job.state == 0 and found is not None, "job not running"
            run_key, run = found
            now = self.now()
            changed = [job_key, run_key]
            if job.price and state == 2:
                market = self.market(job.market)
                used = job.price * max(0, min(now - run.time, job.timeout))
                node_ata = chain.nos_ata(run.node, self.mint)
                if self.get(node_ata) is None:
                    self.create_nos_account(run.node)
                deposit = chain.nos_ata(job.payer, self.mint)
                self._move(market.vault, node_ata, used)
                self._move(market.vault, deposit, job.price * job.timeout - used)
                changed += [market.vault, node_ata, deposit]
            run_account = self.get(run_key)
            assert run_account is not None
            # Closing the run account returns its rent to whoever paid it.
            self._set(run.payer, b"", SYSTEM, self.sol(run.payer) + run_account.lamports)
            self._delete(run_key)
            account = self.get(job_key)
            assert account is not None
            done = _replace_job(job, state=state, node=run.node, time_start=run.time,
                                time_end=now, ipfs_result=result or bytes(32))
            self._set(job_key, done.to_bytes(pad_to=JOB_ACCOUNT_SPACE), self.program,
                      account.lamports)
            self._notify([*changed, run.payer])

    def _move(self, source: Pubkey, dest: Pubkey, amount: int) -> None:
        if amount <= 0:
            return
        for key, delta in ((source, -amount), (dest, amount)):
            account = self.svm.get_account(key)
            assert account is not None, f"no token account {key}"
            data = bytearray(bytes(account.data))
            value = struct.unpack_from("<Q", data, 64)[0] + delta
            assert value >= 0, f"token account {key} would go negative"
            struct.pack_into("<Q", data, 64, value)
            self._set(key, bytes(data), chain.TOKEN_PROGRAM, account.lamports)


class _Ctx:
    """What an emulated instruction sees: its accounts, its signers, and how to fail."""

    def __init__(self, fake: FakeChain, index: int, logs: list[str],
                 accounts: dict[str, Pubkey], signers: set[Pubkey]) -> None:
        self.fake = fake
        self.index = index
        self.logs = logs
        self.accounts = accounts
        self.signers = signers

    def fail(self, code: str, account: str | None) -> None:
        number, text = _ANCHOR_ERRORS[code]
        where = f"caused by account: {account}" if account else "occurred"
        self.logs.append(f"Program log: AnchorError {where}. Error Code: {code}. "
                         f"Error Number: {number}. Error Message: {text}.")
        self.logs.append(f"Program {self.fake.program} consumed 12000 of 200000 compute units")
        self.logs.append(f"Program {self.fake.program} failed: custom program error: "
                         f"{hex(number)}")
        raise _ProgramFailure(self.logs, {"InstructionError": [self.index, {"Custom": number}]})

    def runtime_fail(self, line: str, custom: int) -> None:
        self.logs.append(f"Program {SYSTEM} invoke [2]")
        self.logs.append(line)
        self.logs.append(f"Program {SYSTEM} failed: custom program error: {hex(custom)}")
        self.logs.append(f"Program {self.fake.program} failed: custom program error: "
                         f"{hex(custom)}")
        raise _ProgramFailure(self.logs, {"InstructionError": [self.index, {"Custom": custom}]})

    def require(self, ok: bool, code: str, account: str | None) -> None:
        if not ok:
            self.fail(code, account)

    def require_signer(self, name: str) -> None:
        if self.accounts[name] not in self.signers:
            self.fail("ConstraintSigner", name)

    def market(self, key: Pubkey, *, writable: bool = False) -> MarketAccount:
        account = self.fake.get(key)
        if account is None:
            self.fail("AccountNotInitialized", "market")
        assert account is not None
        if account.owner != self.fake.program:
            self.fail("AccountOwnedByWrongProgram", "market")
        return MarketAccount.from_bytes(bytes(account.data))

    def job(self, key: Pubkey) -> JobAccount:
        account = self.fake.get(key)
        if account is None:
            self.fail("AccountNotInitialized", "job")
        assert account is not None
        if account.owner != self.fake.program:
            self.fail("AccountOwnedByWrongProgram", "job")
        return JobAccount.from_bytes(bytes(account.data))

    def token_account(self, key: Pubkey, name: str, *, owner: Pubkey) -> None:
        account = self.fake.get(key)
        if account is None:
            self.fail("AccountNotInitialized", name)
        assert account is not None
        data = bytes(account.data)
        if account.owner != chain.TOKEN_PROGRAM:
            self.fail("AccountOwnedByWrongProgram", name)
        if data[32:64] != bytes(owner) or key != chain.nos_ata(owner, self.fake.mint):
            self.fail("ConstraintTokenOwner", name)

    def pay_rent(self, payer: Pubkey, new: Pubkey, size: int) -> None:
        need = self.fake.rent(size)
        have = self.fake.sol(payer)
        self.logs.append(f"Program {SYSTEM} invoke [2]")
        if have < need:
            self.runtime_fail(f"Transfer: insufficient lamports {have}, need {need}", 1)
        self.logs.append(f"Program {SYSTEM} success")
        self.fake._set(payer, b"", SYSTEM, have - need)

    def transfer(self, source: Pubkey, dest: Pubkey, amount: int) -> None:
        """An SPL token transfer (CPI into the token program)."""
        if amount <= 0:
            return
        token = str(chain.TOKEN_PROGRAM)
        self.logs.append(f"Program {token} invoke [2]")
        self.logs.append("Program log: Instruction: Transfer")
        src = self.fake.get(source)
        dst = self.fake.get(dest)
        if src is None or dst is None:
            self.logs.append("Program log: Error: InvalidAccountData")
            self.logs.append(f"Program {token} failed: invalid account data for instruction")
            self.logs.append(f"Program {self.fake.program} failed: invalid account data for "
                             "instruction")
            raise _ProgramFailure(self.logs, {"InstructionError": [self.index,
                                                                   "InvalidAccountData"]})
        balance = struct.unpack_from("<Q", bytes(src.data), 64)[0]
        if balance < amount:
            self.logs.append("Program log: Error: insufficient funds")
            self.logs.append(f"Program {token} failed: custom program error: 0x1")
            self.logs.append(f"Program {self.fake.program} failed: custom program error: 0x1")
            raise _ProgramFailure(self.logs, {"InstructionError": [self.index, {"Custom": 1}]})
        self.fake._move(source, dest, amount)
        self.logs.append(f"Program {token} success")

    def close(self, key: Pubkey, receiver: Pubkey) -> None:
        account = self.fake.get(key)
        if account is None:
            return
        self.fake._set(receiver, b"", SYSTEM, self.fake.sol(receiver) + account.lamports)
        self.fake._delete(key)


# --------------------------------------------------------------------------- helpers


def _with_queue(market: MarketAccount, queue: list[Pubkey], queue_type: int) -> MarketAccount:
    return MarketAccount(
        authority=market.authority, job_expiration=market.job_expiration,
        job_price=market.job_price, job_timeout=market.job_timeout, job_type=market.job_type,
        vault=market.vault, vault_bump=market.vault_bump, node_access_key=market.node_access_key,
        node_xnos_minimum=market.node_xnos_minimum, queue_type=queue_type, queue=queue,
    )


def _replace_job(job: JobAccount, **changes: Any) -> JobAccount:
    values = {name: getattr(job, name) for name in (
        "ipfs_job", "ipfs_result", "market", "node", "payer", "price", "project", "state",
        "time_end", "time_start", "timeout")}
    values.update(changes)
    return JobAccount(**values)


def _differs(before: Account | None, after: Account | None) -> bool:
    if before is None or after is None:
        return (before is None) != (after is None) and bool(
            (before and before.lamports) or (after and after.lamports))
    return (before.lamports, bytes(before.data), before.owner) != (
        after.lamports, bytes(after.data), after.owner)


def _cu_price(message: MessageV0, keys: list[Pubkey]) -> int | None:
    budget = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
    for ix in message.instructions:
        data = bytes(ix.data)
        if keys[ix.program_id_index] == budget and data[:1] == b"\x03":
            return int(struct.unpack_from("<Q", data, 1)[0])
    return None


def _ix_name(program: Pubkey, data: bytes, jobs_program: Pubkey) -> str:
    if program == jobs_program:
        try:
            return "jobs." + chain.decode_instruction(data).name
        except chain.InstructionDecodeError:
            return "jobs.?"
    names = {
        "ComputeBudget111111111111111111111111111111": {2: "set_compute_unit_limit",
                                                        3: "set_compute_unit_price"},
        str(chain.ASSOCIATED_TOKEN_PROGRAM): {0: "create", 1: "create_idempotent"},
    }
    table = names.get(str(program))
    if table is not None:
        return f"{_PROGRAM_LABELS.get(str(program), str(program))}." + table.get(
            data[0] if data else 0, "?")
    return _PROGRAM_LABELS.get(str(program), str(program))


_PROGRAM_LABELS = {
    "ComputeBudget111111111111111111111111111111": "compute_budget",
    str(chain.ASSOCIATED_TOKEN_PROGRAM): "associated_token",
    str(chain.TOKEN_PROGRAM): "token",
    str(SYSTEM): "system",
}


def _err_json(err: Any) -> Any:
    """A LiteSVM transaction error in the JSON shape of the RPC (best effort)."""
    text = str(err)
    index = getattr(err, "index", None)
    if index is not None:
        inner = getattr(err, "err", None)
        code = getattr(inner, "code", None) if inner is not None else None
        if code is None and inner is not None:
            code = getattr(getattr(inner, "val", None), "code", None)
        if isinstance(code, int):
            return {"InstructionError": [index, {"Custom": code}]}
        return {"InstructionError": [index, "GenericError"]}
    for name in ("InsufficientFundsForFee", "BlockhashNotFound", "AccountNotFound",
                 "InsufficientFundsForRent"):
        if name in text:
            return name
    return "ProgramFailedToComplete" if "Program" in text else "AccountNotFound"


def _err_text(err: Any) -> str:
    return _err_text_json(_err_json(err))


def _err_text_json(err: Any) -> str:
    if isinstance(err, dict) and "InstructionError" in err:
        index, inner = err["InstructionError"]
        if isinstance(inner, dict) and "Custom" in inner:
            reason = f"custom program error: {hex(inner['Custom'])}"
        else:
            reason = str(inner)
        return f"Error processing Instruction {index}: {reason}"
    return str(err)


def _preflight(err: Any, text: str, logs: list[str]) -> RpcError:
    return RpcError(-32002, f"Transaction simulation failed: {text}", {
        "accounts": None, "err": err, "logs": logs, "unitsConsumed": 0,
        "returnData": None, "innerInstructions": None,
    })
