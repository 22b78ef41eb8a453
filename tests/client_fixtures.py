"""Helpers for the job-client tests: definitions, networks on a devnode, tiny loopback apps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn

from nosana_magic.devnode import DevNode
from nosana_magic.network.api import ApiNetwork
from nosana_magic.network.base import JobState
from nosana_magic.wallet import Wallet

from .devnode_fixtures import PLACEHOLDER
from .waiting import PATIENCE, until

#: A secret value used in tests; it must never appear anywhere the user or the public sees.
SECRET = "s3cr3t-HF-token-0123456789"


def op(op_id: str, cmd: str | list[str], **args: Any) -> dict[str, Any]:
    """A ``container/run`` op; ``results``/``execution`` go to the op, the rest to args."""
    extra: dict[str, Any] = {k: args.pop(k) for k in ("results", "execution") if k in args}
    return {
        "type": "container/run",
        "id": op_id,
        "args": {"image": "python:3.11", "cmd": cmd, **args},
        **extra,
    }


def definition(*ops: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "version": "0.1",
        "type": "container",
        "meta": {"trigger": "cli"},
        "ops": list(ops),
        **top,
    }


def text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2)


def network_for(node: DevNode, wallet: Wallet | None = None, **kw: Any) -> ApiNetwork:
    return ApiNetwork(
        node.url,
        wallet or Wallet.generate(),
        node_url_template=node.node_url_template,
        **kw,
    )


async def list_placeholder(
    network: ApiNetwork,
    *,
    placeholder: dict[str, Any] | None = None,
    timeout: int = 60,
    market: str | None = None,
) -> str:
    """Pin the placeholder and list it; returns the job address."""
    cid = await network.pin(placeholder or PLACEHOLDER)
    markets = await network.markets()
    chosen = next((m for m in markets if m.slug == market), markets[0])
    listing = await network.post(cid, chosen, timeout)
    return listing.job


async def running_node(network: ApiNetwork, job: str, timeout: float = PATIENCE) -> str:
    """Wait until a host took ``job``; returns the host address."""

    async def wait() -> str:
        async for info in network.watch(job):
            if info.state is JobState.RUNNING and info.node:
                return info.node
            if info.state.done:
                raise AssertionError(f"job {job} ended before running: {info}")
        raise AssertionError("watch ended")

    return await asyncio.wait_for(wait(), timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_app(app: Callable[..., Any]) -> AsyncIterator[str]:
    """Serve an ASGI app on a loopback port on the running loop; yields its base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started, what="the loopback app's start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, PATIENCE)
        sock.close()
