"""Shared fixtures: a private sandbox for the session, leak checks (every devnode test, and the
whole session), a started devnode, a project that talks to it, IPython shells with the
extension loaded; and the helpers they share (job definitions, the CLI's placeholder,
networks on a devnode, loopback apps).

Two runs of the suite may share a machine, so everything here is scoped to this session: its
own temporary directory (``TMPDIR``, the local wallet's data dir, IPython's dir), and the leak
checks look only at processes this pytest process started (its descendants) and, among them,
at job processes whose job directory lies in this session's temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ctypes
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from nosana_magic.devnode import DevNode, DevNodeConfig
from nosana_magic.devnode.host import JobRecord
from nosana_magic.jobdef import PLACEHOLDER
from nosana_magic.network.api import ApiNetwork
from nosana_magic.network.base import JobState
from nosana_magic.protocol import now_ms
from nosana_magic.wallet import Wallet

from .waiting import PATIENCE, until

#: Short timings so the suite runs every phase in seconds. Only delays that tests wait out are
#: short. The results window closes as soon as the results are collected, so it can be long
#: enough that a loaded machine never misses it (tests that wait one out set a short one);
#: ``stop_timeout`` bounds a stop that takes well under a second.
FAST = {"pickup_delay": 0.05, "results_window": 10.0, "sse_interval": 0.02, "stop_timeout": 30.0,
        "stop_grace": 0.5}

#: This session's temporary directory (set by ``session_sandbox``). Every devnode the session
#: starts, in this process or in a subprocess, makes its job directories below it, and the
#: executor gives each op its job directory as ``HOME``.
SESSION_ROOT: Path | None = None


# ---------------------------------------------------------------------- our processes (/proc)


def _children_of(pid: int) -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def _children() -> set[int]:
    """Live (non-zombie) child processes of this process."""
    return {pid for pid in _children_of(os.getpid()) if _state(pid) not in (None, "Z")}


def _descendants() -> set[int]:
    """Live processes below this one. The session makes this process the subreaper of its
    descendants, so an orphan (an op's setsid'd grandchild whose parent died) stays here."""
    found: set[int] = set()
    todo = [os.getpid()]
    while todo:
        for child in _children_of(todo.pop()) - found:
            found.add(child)
            todo.append(child)
    return {pid for pid in found if _state(pid) not in (None, "Z")}


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _environment(pid: int) -> dict[bytes, bytes]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.partition(b"=")[::2] for item in raw.split(b"\0") if b"=" in item)


def _in_session(home: bytes) -> bool:
    if SESSION_ROOT is None or not home:
        return False
    path = Path(os.fsdecode(home))
    return path == SESSION_ROOT or SESSION_ROOT in path.parents


def processes_of_jobs(jobs: set[str] | None = None) -> set[int]:
    """Live job processes of this session: descendants of this process whose ``NOSANA_ID``
    is one of ``jobs`` (``None``: any job of this session, i.e. whose ``HOME``, the job
    directory the executor gives an op, is inside this session's temporary directory).

    The executor sets ``NOSANA_ID`` and ``HOME``, which grandchildren inherit, so an orphan
    is found too. Other processes on the machine are never looked at, and a process of ours
    that only carries some other job's id is not counted.
    """
    wanted = None if jobs is None else {job.encode() for job in jobs if job}
    found: set[int] = set()
    for pid in _descendants():
        env = _environment(pid)
        job = env.get(b"NOSANA_ID")
        if not job:
            continue
        if (job in wanted) if wanted is not None else _in_session(env.get(b"HOME", b"")):
            found.add(pid)
    return found


def _listening_ports() -> set[int]:
    """TCP ports this process listens on."""
    inodes: set[str] = set()
    for fd in Path("/proc/self/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _wait_while(check: object, timeout: float) -> None:
    """Until ``check()`` is falsy (a leak went away) or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not check():  # type: ignore[operator]
            return
        time.sleep(0.02)


def _become_subreaper() -> None:
    """Orphans among our descendants are re-parented to this process, not to init, so that
    the leak checks still find (only) them. Linux only; elsewhere the checks see less."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


@pytest.fixture(scope="session", autouse=True)
def session_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This session's own temporary directory, data dir and IPython dir, inherited by every
    subprocess it starts (kernels, the demo, a devnode): a second run of the suite on the
    same machine shares none of them."""
    global SESSION_ROOT
    root = tmp_path_factory.getbasetemp().resolve()
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    SESSION_ROOT = root
    _become_subreaper()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(tmp))
        mp.setattr(tempfile, "tempdir", str(tmp))
        mp.setenv("XDG_DATA_HOME", str(root / "xdg-data"))  # the local wallet's default home
        mp.setenv("IPYTHONDIR", str(root / "ipython"))  # history databases, profiles
        # A local network service a test leaves behind stops by itself soon.
        mp.setenv("NOSANA_LOCAL_IDLE", "2m")
        yield root


def stop_local_services(root: Path) -> list[int]:
    """Stop every local network service whose runtime file lies below ``root`` (the data
    dirs of this session's tests); the pids stopped."""
    from nosana_magic.devnode.runtime import RUNTIME_FILE
    from nosana_magic.network.local import stop_local_service
    from nosana_magic.settings import Settings

    stopped = []
    for runtime in root.rglob(RUNTIME_FILE):
        info = stop_local_service(Settings.from_env({}, data_dir=str(runtime.parent)))
        if info is not None:
            stopped.append(info.pid)
    return stopped


@pytest.fixture(scope="session", autouse=True)
def no_job_process_outlives_the_tests(session_sandbox: Path) -> Iterator[None]:
    """Whatever started them (devnode fixtures, magics, notebooks, local network services),
    no job process of this session is left; those found are reported, then killed."""
    yield
    stop_local_services(session_sandbox)
    _wait_while(processes_of_jobs, PATIENCE)
    left = processes_of_jobs()
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"job processes outlived the test session: {sorted(left)}"


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each devnode test: no new thread, child process or listening port remains."""
    if not request.node.module.__name__.rsplit(".", 1)[-1].startswith("test_devnode"):
        yield
        return
    threads = set(threading.enumerate())
    children = _children()
    ports = _listening_ports()
    yield

    def new_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in threads and t.is_alive()]

    _wait_while(lambda: new_threads() or (_children() - children), PATIENCE)
    assert not new_threads(), f"threads left behind: {new_threads()}"
    assert not (_children() - children), f"child processes left: {_children() - children}"
    assert not (_listening_ports() - ports), f"ports left open: {_listening_ports() - ports}"


@pytest.fixture
def devnode_config() -> DevNodeConfig:
    """The configuration the ``devnode`` fixture starts with (override it in a module)."""
    return DevNodeConfig(**FAST)  # type: ignore[arg-type]


@pytest.fixture
def devnode(devnode_config: DevNodeConfig) -> Iterator[DevNode]:
    """A started in-process devnode with short timings; after the test, no job process."""
    node = DevNode(devnode_config)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        jobs = set(node.ledger.jobs)
        _wait_while(lambda: processes_of_jobs(jobs), PATIENCE)
        assert not processes_of_jobs(jobs), "job processes survived the devnode"


# ---------------------------------------------------------------------- job definitions


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


# ---------------------------------------------------------------------- a project on a devnode


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


@pytest.fixture
def project(devnode: DevNode) -> Iterator[Project]:
    """A wallet that posts jobs to the ``devnode`` fixture and signs its host requests."""
    with Project(devnode) as p:
        yield p


class CreditProject(Project):
    """A :class:`Project` that pays with an API key: its ledger calls carry ``Bearer <key>``
    and its node headers come from the devnode's signing service (signed by the key's
    project key), as a credits user reaches a host."""

    def __init__(self, node: DevNode, key: str | None = None) -> None:
        super().__init__(node)
        self.key = key if key is not None else node.api_key

    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def address(self) -> str:
        """The key's project address (what jobs listed with it have as ``project``)."""
        return self.node.ledger.credits.account(self.key).address

    def sign(self, message: str = "nosana-auth", **body: Any) -> httpx.Response:
        return self.http.post(f"{self.node.client_manager_url}/auth/sign-message/external",
                              json={"message": message, **body}, headers=self.api_headers())

    def header(self, message: str = "nosana-auth", **kw: Any) -> dict[str, str]:
        response = self.sign(message)
        assert response.status_code == 200, response.text
        signature = response.json()["signature"]
        base = signature if ":" in signature else f"{message}:{signature}"
        return {"Authorization": f"{base}:{now_ms()}"}

    def list_answer(self, *, market: str = "local-cpu", timeout: int = 60) -> httpx.Response:
        body = {"ipfsHash": self.pin(PLACEHOLDER), "market": market, "timeout": timeout}
        return self.http.post("/api/jobs/list", json=body, headers=self.api_headers())

    def balance(self) -> dict[str, Any]:
        response = self.http.get("/api/credits/balance", headers=self.api_headers())
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
def credit_user(devnode: DevNode) -> Iterator[CreditProject]:
    """The ``devnode`` fixture's own API key, as a :class:`CreditProject`."""
    with CreditProject(devnode) as p:
        yield p


# ---------------------------------------------------------------------- IPython shells


@contextlib.contextmanager
def ipython_shell(*, load: bool = True) -> Iterator[InteractiveShell]:
    """A fresh IPython shell with its history in memory and, with ``load``, the extension
    loaded as ``%load_ext nosana_magic`` does; torn down (extension unloaded) after."""
    InteractiveShell.clear_instance()
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    if load:
        shell.extension_manager.load_extension("nosana_magic")
    try:
        yield shell
    finally:
        shell.extension_manager.unload_extension("nosana_magic")
        assert shell.history_manager is not None
        shell.history_manager.end_session()
        InteractiveShell.clear_instance()


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    """A fresh IPython shell with the extension loaded, for one test."""
    with ipython_shell() as ip:
        yield ip


@pytest.fixture(scope="module")
def shell_devnode() -> Iterator[DevNode]:
    """One devnode for a module of shell tests (the magics reach it through
    ``NOSANA_DEVNODE_URL``): starting one per test would dominate their time."""
    with DevNode(pickup_delay=0.05, results_window=10, sse_interval=0.05,
                 stop_grace=0.5) as node:
        yield node
