"""Exposed services of a running job, reached through the devnode's service URLs and reported
by the host's ``/endpoints`` and ``/info`` to the owner only."""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any

import httpx

from nosana_magic.protocol import expose_id
from nosana_magic.wallet import Wallet

from .conftest import Project, definition
from .waiting import PATIENCE, wait_until

SERVER = (
    "import http.server, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def log_message(self, *a): pass\n"
    "    def do_GET(self):\n"
    "        body = (sys.argv[2] + ' ' + self.path).encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_op(op_id: str, port: int, *, private: bool = False, checked: bool = False
              ) -> dict[str, Any]:
    expose: Any = port
    if checked:
        expose = [{"port": port, "health_checks": [
            {"type": "http", "path": "/health", "method": "GET", "expected_status": 200,
             "continuous": False}]}]
    args: dict[str, Any] = {"image": "python", "cmd": [sys.executable, "-c", SERVER, str(port),
                                                        op_id], "expose": expose}
    if private:
        args["private"] = True
    return {"type": "container/run", "id": op_id, "args": args,
            "execution": {"group": "services"}}


def wait_endpoints(project: Project, job: str, count: int, timeout: float = PATIENCE
                   ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = project.get(job, "/endpoints")
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            urls = body["urls"]
            if len(urls) == count and all(u["status"] != "OFFLINE" for u in urls.values()):
                return body
        else:
            assert response.text == "No exposed url for job id"
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)


def test_endpoints_are_offline_until_a_startup_health_check_passes(project: Project) -> None:
    """The top-level status is ONLINE only once a startup health check passed: a service
    without health checks reads OFFLINE there (and UNKNOWN for itself), as on a Nosana host."""
    port = free_port()
    job = project.submit(definition(server_op("web", port)))
    body = wait_endpoints(project, job, 1)
    (url,) = body["urls"].values()
    assert (body["status"], url["status"]) == ("OFFLINE", "UNKNOWN")
    with httpx.Client(trust_env=False, timeout=PATIENCE) as client:
        wait_until(lambda: client.get(url["url"] + "/").status_code == 200,
                   what="the service listening")
    again = project.get(job, "/endpoints").json()
    assert again["status"] == "OFFLINE"
    states = [s["status"] for s in project.node.host(project.node.job(job).node or "")
              .node_states.history(job)]
    assert "service-url-ready" not in states  # (only a passed health check says so)
    project.post(job, "/stop")


def test_public_and_private_services_are_reachable(project: Project) -> None:
    public_port, private_port = free_port(), free_port()
    job = project.submit(definition(server_op("web", public_port, checked=True),
                                    server_op("secret", private_port, private=True)))
    body = wait_endpoints(project, job, 2)
    assert body["status"] == "ONLINE"
    by_op = {u["opID"]: (sid, u) for sid, u in body["urls"].items()}
    public_id, public = by_op["web"]
    private_id, private = by_op["secret"]
    assert public_id == expose_id(job, 0, public_port)
    assert len(private_id) == 45 and private_id != expose_id(job, 1, private_port)
    assert public["status"] == "ONLINE" and private["status"] == "UNKNOWN"
    assert public["url"] == f"{project.node.url}/service/{public_id}"
    assert (public["port"], private["port"]) == (public_port, private_port)

    with httpx.Client(trust_env=False, timeout=PATIENCE) as client:
        assert client.get(public["url"] + "/hello?x=1").text == "web /hello?x=1"
        # No health check says when the private one listens: 502 until it does.
        reply = wait_until(lambda: (r := client.get(private["url"] + "/")).status_code != 502
                           and r, what="the private service listening")
        assert reply.text == "secret /"

    # The owner sees the URLs in /info too; nobody else gets them.
    with project.http.stream("GET", project.node_path(job, "/info"),
                             headers=project.header()) as stream:
        first = next(line for line in stream.iter_lines() if line.startswith("data: "))
    secrets = json.loads(first[6:])["secrets"]
    assert set(secrets[job]) == {public_id, private_id}
    assert secrets["urlmode"] == "private"
    stranger = Wallet.generate().auth_header("x")
    assert project.get(job, "/endpoints", headers={"Authorization": stranger}).status_code == 401

    # When the job ends, the URLs go away.
    project.post(job, "/stop")
    project.wait_flow(job, "waiting-for-result")
    assert project.get(job, "/endpoints").text == "No exposed url for job id"
    with httpx.Client(trust_env=False, timeout=PATIENCE) as client:
        assert client.get(public["url"] + "/").status_code == 404
    assert project.collect(job)["secrets"] == {}
