"""Devnode hosts working for a market of the fake chain, as real nodes work for a real market.

Real Nosana nodes wait in a market's node queue on chain, take the jobs the program hands
them (a RunAccount naming them), read the job's facts from chain (project, IPFS definition,
timeout) and post the result with ``finish``. This bridge plays that part for the devnode's
emulated hosts:

* each host of the devnode joins the fake market's node queue (``work``);
* when a RunAccount names one of them, the job is mirrored into the devnode's ledger with the
  facts read from the chain account (project, ``ipfs_job``, timeout, price) and the host
  starts it: so its node API checks the client's signatures against the on-chain project;
* a chain-side ``end`` (the project stopped the job) or ``extend`` reaches the host;
* when the host completes, its result CID goes back on chain (``finish`` with the digest, or
  ``complete`` after an ``end``; ``quit`` when the host gave up) and the host queues again.

The devnode must not match jobs itself (``pickup_delay=None``); its IPFS store should back the
fake Pinata (``FakeSolana(pinata_store=devnode.ipfs)``) so hosts read what the client pinned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from solders.pubkey import Pubkey

from nosana_magic.chain import ACCOUNT_DISCRIMINATORS, JobAccount, RunAccount
from nosana_magic.devnode import DevNode, EmulatedHost, LedgerJob
from nosana_magic.network.base import JobState
from nosana_magic.protocol import cid_to_digest

from .chain import FakeChain

__all__ = ["ChainBridge"]

_RUN_DISCRIMINATOR = ACCOUNT_DISCRIMINATORS["RunAccount"]


@dataclass
class _Mirror:
    job: Pubkey
    host: EmulatedHost
    ended_on_chain: bool = False
    reported: bool = False


class ChainBridge:
    """Mirror jobs between a :class:`FakeChain` market and a running :class:`DevNode`."""

    def __init__(self, chain: FakeChain, devnode: DevNode, market: Pubkey, *,
                 poll_s: float = 0.05) -> None:
        self.chain = chain
        self.devnode = devnode
        self.market = market
        self.poll_s = poll_s
        self.hosts = {Pubkey.from_string(h.address): h for h in devnode.hosts}
        self.mirrors: dict[Pubkey, _Mirror] = {}
        self.errors: list[BaseException] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="chain-bridge", daemon=True)
        self._unsubscribe: Callable[[], None] = lambda: None

    def start(self) -> ChainBridge:
        for key in self.hosts:
            self.chain.node_work(self.market, key)
        self._unsubscribe = self.chain.on_change(lambda keys: self._wake.set())
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._unsubscribe()
        self._thread.join(timeout=10)

    def __enter__(self) -> ChainBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the loop

    def _main(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            try:
                self._sync()
            except BaseException as exc:  # kept for the test to see; the loop goes on
                self.errors.append(exc)
                time.sleep(self.poll_s)

    def _sync(self) -> None:
        # chain -> devnode: runs naming our hosts
        for key, account in self.chain.program_accounts(self.chain.program):
            data = bytes(account.data)
            if data[:8] != _RUN_DISCRIMINATOR:
                continue
            run = RunAccount.from_bytes(data)
            host = self.hosts.get(run.node)
            if host is None or run.job in self.mirrors:
                continue
            job = self.chain.job(run.job)
            if job is None or job.state != 0:
                continue
            self._start(run.job, key, run.time, job, host)
        for mirror in list(self.mirrors.values()):
            self._follow(mirror)

    def _start(self, job_key: Pubkey, run_key: Pubkey, run_time: int, job: JobAccount,
               host: EmulatedHost) -> None:
        self.mirrors[job_key] = _Mirror(job_key, host)
        now = time.time()
        entry = LedgerJob(
            address=str(job_key), market=host.market.address, project=str(job.project),
            ipfs_job=job.ipfs_job_cid, timeout=job.timeout, price=job.price,
            listed_at=now, requested_node=None, state=JobState.RUNNING,
            node=host.address, run=str(run_key), time_start=run_time, started_at=now,
        )

        def begin() -> None:
            self.devnode.ledger.jobs[entry.address] = entry
            host.start_job(entry)

        self.devnode.call(begin)

    def _follow(self, mirror: _Mirror) -> None:
        if mirror.reported:
            return
        address = str(mirror.job)
        entry = self.devnode.ledger.jobs[address]
        on_chain = self.chain.job(mirror.job)
        # chain -> devnode: the project ended the job, or extended it.
        if not mirror.ended_on_chain and (on_chain is None or on_chain.state != 0):
            mirror.ended_on_chain = True

            def end() -> None:
                entry.stop_requested = True
                mirror.host.end_job(address)

            self.devnode.call(end)
        elif on_chain is not None and on_chain.timeout != entry.timeout:
            timeout = on_chain.timeout

            def extend() -> None:
                entry.timeout = timeout
                mirror.host.job_extended(address)

            self.devnode.call(extend)
        # devnode -> chain: the host's result.
        if not entry.state.done:
            return
        mirror.reported = True
        result = cid_to_digest(entry.ipfs_result) if entry.ipfs_result else None
        if mirror.ended_on_chain:
            if on_chain is not None and on_chain.state == 2 and result is not None:
                self.chain.node_complete(mirror.job, result)
        elif entry.host_quit:
            self.chain.node_quit(mirror.job)
        else:
            self.chain.node_finish(mirror.job, result)
        # The host is free again: it queues for the next job.
        self.chain.node_work(self.market, Pubkey.from_string(mirror.host.address))

