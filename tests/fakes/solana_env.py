"""A whole fake Solana cluster for a test: chain, JSON-RPC + WebSocket, Pinata, a wallet.

>>> with FakeSolana() as env:                       # doctest: +SKIP
...     market = env.add_market("nvidia-4090", price=115, nodes=1)
...     env.fund(sol=0.1, nos=10)
...     network = env.network()
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from nosana_magic.network.ipfs import PinataClient
from nosana_magic.network.markets import MAINNET_MARKETS
from nosana_magic.network.solana import SolanaNetwork
from nosana_magic.transport import Retry
from nosana_magic.wallet import Wallet

from .chain import FakeChain
from .loopback import LoopbackServer
from .pinata import BlobStore, FakePinata
from .rpc import FakeRpc

__all__ = ["PINATA_JWT", "FakeSolana"]

#: The upload credential the fake Pinata accepts (a test value, not a real JWT).
PINATA_JWT = "test-pinata-jwt.not-a-real-credential"

LAMPORTS_PER_SOL = 1_000_000_000
NOS = 1_000_000


class FakeSolana:
    """Everything ``SolanaNetwork`` talks to, on loopback, for one test."""

    def __init__(
        self,
        cluster: str = "mainnet",
        *,
        network_fee_pct: float = 0.0,
        pinata_store: BlobStore | None = None,
        wallet: Wallet | None = None,
    ) -> None:
        self.cluster = cluster
        self.chain = FakeChain(cluster, network_fee_pct=network_fee_pct)
        self.rpc = FakeRpc(self.chain)
        self.pinata = FakePinata(PINATA_JWT, store=pinata_store)
        self.rpc_server = LoopbackServer(self.rpc)
        self.pinata_server = LoopbackServer(self.pinata)
        self.wallet = wallet or Wallet(Keypair(), source="test")

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeSolana:
        self.rpc_server.start()
        try:
            self.pinata_server.start()
        except BaseException:
            self.rpc_server.stop()
            raise
        return self

    def stop(self) -> None:
        self.pinata_server.stop()
        self.rpc_server.stop()

    def __enter__(self) -> FakeSolana:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def rpc_url(self) -> str:
        return self.rpc_server.url

    @property
    def pinata_url(self) -> str:
        return self.pinata_server.url

    @property
    def gateway(self) -> str:
        return f"{self.pinata_server.url}/ipfs"

    # ------------------------------------------------------------------ state

    def fund(self, *, sol: float | None = 0.1, nos: float | None = 10.0,
             owner: Pubkey | None = None) -> None:
        """Give the wallet (or ``owner``) SOL and a NOS token account holding ``nos``.

        ``nos=None``: no NOS token account at all.
        """
        who = owner or self.wallet.public_key
        if sol is not None:
            self.chain.fund_sol(who, int(sol * LAMPORTS_PER_SOL))
        if nos is not None:
            self.chain.create_nos_account(who, int(nos * NOS))

    def add_market(self, slug: str = "nvidia-4090", *, price: int = 115,
                   nodes: int | list[Pubkey] = 1, job_timeout: int = 24 * 3600) -> Pubkey:
        """A market at the real mainnet address of ``slug`` (or a fresh one) with ``nodes``
        idle nodes (a count of fresh keys, or the keys)."""
        keys = [Keypair().pubkey() for _ in range(nodes)] if isinstance(nodes, int) else nodes
        address = MAINNET_MARKETS.get(slug) if self.cluster == "mainnet" else None
        return self.chain.add_market(
            price=price, job_timeout=job_timeout, nodes=keys,
            address=Pubkey.from_string(address) if address else None,
        )

    def sol(self) -> int:
        return self.chain.sol(self.wallet.public_key)

    def nos(self) -> int | None:
        return self.chain.nos(self.wallet.public_key)

    # ------------------------------------------------------------------ clients

    def pinata_client(self, jwt: str | None = PINATA_JWT) -> PinataClient:
        return PinataClient(jwt, api_url=self.pinata_url, gateway=self.gateway,
                            retry=Retry(first=0.01, attempts=2))

    def network(self, **overrides: Any) -> SolanaNetwork:
        """A ``SolanaNetwork`` pointed at the fakes, with short waits for tests."""
        kwargs: dict[str, Any] = dict(
            cluster=self.cluster, rpc_url=self.rpc_url, pinata=self.pinata_client(),
            markets_api="off", poll_interval_s=0.1, retry=Retry(first=0.01, attempts=3),
            request_timeout_s=5.0, confirm_timeout_s=10.0, result_grace_s=1.0,
        )
        kwargs.update(overrides)
        wallet = kwargs.pop("wallet", self.wallet)
        return SolanaNetwork(wallet, **kwargs)

    def environment(self, tmp: Path, *, node_url_template: str | None = None) -> dict[str, str]:
        """Environment variables that point the package (settings, magic) at these fakes,
        with the wallet written to a key file under ``tmp`` (mode 600)."""
        key_file = tmp / "nosana_key.json"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(list(self.wallet.keypair.to_bytes()), handle)
        env = {
            "NOSANA_NETWORK": self.cluster,
            "NOSANA_RPC_URL": self.rpc_url,
            "NOSANA_WALLET": str(key_file),
            "NOSANA_PINATA_JWT": PINATA_JWT,
            "NOSANA_PINATA_API_URL": self.pinata_url,
            "NOSANA_IPFS_GATEWAY": self.gateway,
            "NOSANA_MARKETS_API": "off",
            "NOSANA_PRIORITY_FEE": "10000",
        }
        if node_url_template is not None:
            env["NOSANA_NODE_URL_TEMPLATE"] = node_url_template
        return env

