"""Helpers for devnode tests: a project that pins, lists and talks to hosts over real HTTP."""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx

from nosana_magic.devnode import DevNode
from nosana_magic.devnode.host import JobRecord
from nosana_magic.wallet import Wallet

from .waiting import PATIENCE

#: The Nosana CLI's confidential placeholder.
PLACEHOLDER: dict[str, Any] = {
    "version": "0.1",
    "type": "container",
    "meta": {"trigger": "cli"},
    "logistics": {
        "send": {"type": "api-listen", "args": {}},
        "receive": {"type": "api-listen", "args": {}},
    },
    "ops": [],
}


def op(op_id: str, cmd: str | list[str], **args: Any) -> dict[str, Any]:
    """A ``container/run`` op; ``results``/``execution`` go to the op, the rest to args."""
    extra = {k: args.pop(k) for k in ("results", "execution") if k in args}
    return {"type": "container/run", "id": op_id,
            "args": {"image": "ubuntu", "cmd": cmd, **args}, **extra}


def definition(*ops: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": "0.1", "type": "container", "meta": {"trigger": "cli"},
            "ops": list(ops), **top}


class Project:
    """A wallet that posts jobs to a devnode and signs its requests to the hosts."""

    def __init__(self, node: DevNode, wallet: Wallet | None = None) -> None:
        self.node = node
        self.wallet = wallet or Wallet.generate()
        self.http = httpx.Client(base_url=node.url, trust_env=False, timeout=PATIENCE)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ledger and IPFS ----------------------------------------------------------------

    def api_headers(self) -> dict[str, str]:
        return {"Authorization": self.wallet.auth_header("NosanaApiAuthentication"),
                "x-user-id": self.wallet.address}

    def pin(self, document: Any) -> str:
        response = self.http.post("/pinning/pinJSONToIPFS", json=document,
                                  headers={"Authorization": "Bearer test"})
        response.raise_for_status()
        return str(response.json()["IpfsHash"])

    def list(self, cid: str, *, market: str = "local-cpu", timeout: int = 60,
             node: str | None = None) -> str:
        body: dict[str, Any] = {"ipfsHash": cid, "market": market, "timeout": timeout}
        if node is not None:
            body["node"] = node
        response = self.http.post("/api/jobs/list", json=body, headers=self.api_headers())
        assert response.status_code == 200, response.text
        return str(response.json()["job"])

    def job(self, job: str) -> dict[str, Any]:
        response = self.http.get(f"/api/jobs/{job}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def post_placeholder(self, placeholder: dict[str, Any] | None = None, **kw: Any) -> str:
        return self.list(self.pin(copy.deepcopy(placeholder or PLACEHOLDER)), **kw)

    def wait_running(self, job: str, timeout: float = PATIENCE) -> str:
        """The node that took the job."""
        info = self.node.wait_job(job, "RUNNING", "COMPLETED", "STOPPED", timeout=timeout)
        assert info.node is not None
        return info.node

    def record(self, job: str) -> JobRecord:
        info = self.node.job(job)
        assert info.node is not None
        record = self.node.host(info.node).record(job)
        assert record is not None
        return record

    def wait_flow(self, job: str, *statuses: str, timeout: float = PATIENCE) -> JobRecord:
        """Until the host's flow for ``job`` has one of ``statuses``."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.node.ledger.jobs.get(job)
            host = self.node.host(info.node) if info is not None and info.node else None
            record = host.record(job) if host is not None else None
            if record is not None and record.flow is not None and record.flow.status in statuses:
                return record
            if time.monotonic() > deadline:
                status = record.flow.status if record and record.flow else None
                raise TimeoutError(f"flow of {job} is {status}, not {statuses}")
            time.sleep(0.01)

    # -- the node API ---------------------------------------------------------------------

    def header(self, message: str = "nosana-auth", **kw: Any) -> dict[str, str]:
        return {"Authorization": self.wallet.auth_header(message, **kw)}

    def node_path(self, job: str, route: str = "") -> str:
        info = self.node.job(job)
        return f"/node/{info.node}/job/{job}{route}"

    def get(self, job: str, route: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", None) or self.header()
        return self.http.get(self.node_path(job, route), headers=headers, **kw)

    def post(self, job: str, route: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", None) or self.header()
        return self.http.post(self.node_path(job, route), headers=headers, **kw)

    def send_definition(self, job: str, body: Any, timeout: float = PATIENCE) -> httpx.Response:
        """POST the real definition, retrying while the host has no flow yet (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.post(job, "/job-definition", json=body)
            if response.status_code != 400 or response.text != "invalid job id":
                return response
            if time.monotonic() > deadline:
                return response
            time.sleep(0.02)

    def submit(self, body: Any, **kw: Any) -> str:
        """Pin the placeholder, list, wait for a host, send ``body``; returns the job."""
        job = self.post_placeholder(**kw)
        self.wait_running(job)
        self.wait_flow(job, "waiting-for-job-definition")
        response = self.send_definition(job, body)
        assert response.status_code == 200, response.text
        return job

    def collect(self, job: str, timeout: float = PATIENCE) -> dict[str, Any]:
        """Poll ``GET /results`` until 200 (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.get(job, "/results")
            if response.status_code == 200:
                result: dict[str, Any] = response.json()
                return result
            assert response.text == "cannot get job result at this time", response.text
            if time.monotonic() > deadline:
                raise TimeoutError(f"no results for {job}")
            time.sleep(0.02)
