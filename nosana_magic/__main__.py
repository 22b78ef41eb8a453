"""``python -m nosana_magic demo``: the quickstart job on the local Nosana network; and
``python -m nosana_magic local status|start|stop``: that network's service, as ``%nosana local``.

It runs the same job definition as ``notebooks/quickstart.ipynb`` (the constants below; a test
checks that the notebook's cells hold exactly these texts) with the plain-text view: a tiny
logistic regression in pure Python whose metrics are extracted by ``results`` regexes, a
private HTTP service that serves them, and an ``${env:DEMO_API_TOKEN}`` secret the job proves
it received without printing it. Exit status 0 when the job succeeded and every check passed.

The service listens on a port picked free when the demo starts (``${var:PORT}``): the job's
processes run on this machine, so a fixed port could already be taken.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import socket
import sys
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .display import JobView
    from .job import ConfidentialJob
    from .results import ServiceUrl

__all__ = ["QUICKSTART_DEFINITION", "SERVE_PY", "TRAIN_PY", "free_port", "local_command", "main"]

#: The training op's script (the notebook variable ``TRAIN_PY``).
TRAIN_PY = r'''
# A tiny logistic regression trained by gradient descent, in pure Python.
import hashlib, json, math, os, random

token = os.environ["DEMO_API_TOKEN"]  # arrived with the private definition; never printed
print("token received:", len(token), "characters,",
      "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:8])

random.seed(0)
points = [(random.gauss(0, 1), random.gauss(0, 1)) for _ in range(400)]
data = [((x, y), 1 if x + 2 * y + random.gauss(0, 0.3) > 0.5 else 0) for x, y in points]

w1 = w2 = b = 0.0
for epoch in range(1, 201):
    g1 = g2 = gb = loss = 0.0
    for (x, y), label in data:
        p = 1 / (1 + math.exp(-(w1 * x + w2 * y + b)))
        loss -= math.log(p if label else 1 - p)
        g1, g2, gb = g1 + (p - label) * x, g2 + (p - label) * y, gb + (p - label)
    n = len(data)
    w1, w2, b = w1 - 0.5 * g1 / n, w2 - 0.5 * g2 / n, b - 0.5 * gb / n
    if epoch % 40 == 0:
        print(f"epoch {epoch}: loss {loss / n:.4f}", flush=True)

correct = sum((w1 * x + w2 * y + b > 0) == bool(label) for (x, y), label in data)
metrics = {"loss": round(loss / n, 4), "accuracy": round(correct / n, 4),
           "weights": [round(w1, 3), round(w2, 3), round(b, 3)]}
with open("metrics.json", "w") as f:  # the serve op runs next, in the same work dir
    json.dump(metrics, f)
print(f"loss={metrics['loss']}")
print(f"accuracy={metrics['accuracy']}")
'''.lstrip()

#: The service op's script (the notebook variable ``SERVE_PY``).
SERVE_PY = r'''
# Serve the metrics on the op's private port until they have been fetched once.
import http.server, os, time

body = open("metrics.json", "rb").read()
fetched = False

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global fetched
        if self.path == "/health":
            reply, kind = b"ok", "text/plain"
        elif self.path == "/metrics":
            reply, kind, fetched = body, "application/json", True
            print("metrics fetched", flush=True)
        else:
            return self.send_error(404)
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass  # the health checks would fill the log

port = int(os.environ["PORT"])  # the port the definition exposes
server = http.server.HTTPServer(("127.0.0.1", port), Handler)
server.timeout = 0.5
print(f"serving the metrics on port {port}", flush=True)
deadline = time.time() + 120
while not fetched and time.time() < deadline:
    server.handle_request()
'''.lstrip()

#: The job definition of the quickstart cell (JSON with comments, as a cell may hold).
QUICKSTART_DEFINITION = """
{
  "version": "0.1",
  "type": "container",
  "meta": {"trigger": "cli"},
  "ops": [
    {
      "type": "container/run",
      "id": "train",
      "args": {
        "image": "python:3.12-slim",
        "cmd": ["python3", "-c", "${var:TRAIN_PY}"],
        // Resolved only when the definition goes to the host; never pinned, never shown.
        "env": {"DEMO_API_TOKEN": "${env:DEMO_API_TOKEN}"}
      },
      "results": {
        "loss": "loss=([0-9.]+)",
        "accuracy": "accuracy=([0-9.]+)",
        "token_sha256": "(sha256:[0-9a-f]{8})"
      }
    },
    {
      "type": "container/run",
      "id": "serve",
      "args": {
        "image": "python:3.12-slim",
        "cmd": ["python3", "-c", "${var:SERVE_PY}"],
        "env": {"PORT": "${var:PORT}"},
        "private": true,
        "expose": [{
          "port": "${var:PORT}",
          "health_checks": [{"type": "http", "path": "/health", "method": "GET",
                             "expected_status": 200, "continuous": true}]
        }]
      }
    }
  ]
}
""".strip()

#: How long the demo waits for the private service to come online.
_SERVICE_WAIT_S = 120.0


def free_port() -> int:
    """A TCP port nothing on 127.0.0.1 listens on now (the job's service takes it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _fail(message: str) -> int:
    print(f"demo failed: {message}", file=sys.stderr)
    return 1


def online_service(job: ConfidentialJob, op_id: str) -> ServiceUrl | None:
    """The first ONLINE service URL of ``op_id``, if there is one yet."""
    return next((url for url in job.urls if url.op_id == op_id and url.status == "ONLINE"),
                None)


def _wait_for_service(job: ConfidentialJob, view: JobView, op_id: str) -> ServiceUrl:
    """``op_id``'s service once it is ONLINE, the view drained meanwhile: the cell magic's
    follow loop, with its Ctrl-C (the job is stopped)."""
    try:
        job.wait(_SERVICE_WAIT_S, each=view.drain,
                 until=lambda: online_service(job, op_id) is not None)
    except TimeoutError:
        raise RuntimeError(f"the service of op {op_id} was not online after "
                           f"{_SERVICE_WAIT_S:g} s") from None
    url = online_service(job, op_id)
    if url is None:
        raise RuntimeError(f"the job ended ({job.status}) before its service came online")
    return url


def demo(*, timeout: str = "5m", quiet: bool = False) -> int:
    """Run the quickstart job with the text view; 0 when it succeeded and every check passed.

    A local network service that the demo started is stopped at its end: a command run once
    leaves nothing running behind it.
    """
    from .network import local
    from .settings import Settings

    settings = Settings.from_env()
    own = (settings.network == "local" and not settings.devnode_url
           and local.service_info(settings) is None)
    try:
        return _demo(timeout=timeout, quiet=quiet)
    finally:
        if own and local.stop_local_service(settings) is not None:
            print("· stopped the local Nosana network the demo started")


def _demo(*, timeout: str, quiet: bool) -> int:
    from .display import JobView, follow
    from .job import run_confidential
    from .jobdef import parse_job_definition
    from .settings import reference_env

    # A stand-in for a real API key, made here so that it is never typed anywhere (or the
    # caller's own DEMO_API_TOKEN).
    token = reference_env().get("DEMO_API_TOKEN") or secrets.token_hex(16)
    definition = parse_job_definition(QUICKSTART_DEFINITION)
    for warning in definition.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in definition.notes:
        print(f"note: {note}", file=sys.stderr)
    job = run_confidential(
        definition, timeout=timeout, wait=False, env={"DEMO_API_TOKEN": token},
        namespace={"TRAIN_PY": TRAIN_PY, "SERVE_PY": SERVE_PY, "PORT": free_port()},
        on_notice=print)
    view = JobView(job, quiet=quiet, mode="text").show()
    try:
        url = _wait_for_service(job, view, "serve")
        try:
            with urllib.request.urlopen(url.url.rstrip("/") + "/metrics", timeout=10) as reply:
                served = json.load(reply)
        except KeyboardInterrupt:
            raise job.stop_after_interrupt(each=view.drain) from None
        view.drain()
        print(f"· fetched {url.url}/metrics (private: {url.private}): {served}")
        follow(job, view)  # to the end
    except KeyboardInterrupt as stopped:  # JobInterrupted: the job was told to stop
        view.finish(interrupted=True)
        return _fail(str(stopped))
    except (RuntimeError, OSError) as err:
        view.finish()
        job.stop()
        return _fail(str(err))
    expected = "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:8]
    checks = {
        "the job succeeded": job.ok,
        "train exited 0": job.ops["train"].exit_code == 0,
        "loss and accuracy extracted": {"loss", "accuracy"} <= set(job.results),
        "the job received the token": job.results.get("token_sha256") == expected,
        "the private service served the metrics": served.get("loss") == job.results.get("loss"),
    }
    for name, passed in checks.items():
        print(f"{'ok  ' if passed else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m nosana_magic`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m nosana_magic",
        description="Run confidential Nosana jobs. In a notebook: %load_ext nosana_magic.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_demo = commands.add_parser(
        "demo", help="run the quickstart job on the local Nosana network",
        description="Run the quickstart job (notebooks/quickstart.ipynb) on the "
                    "local network: train, extract metrics, fetch them from a private "
                    "service, prove a secret arrived. Exit status 0 on success.")
    run_demo.add_argument("-t", "--timeout", default="5m", help="job timeout (default 5m)")
    run_demo.add_argument("-q", "--quiet", action="store_true", help="status only, no logs")
    service = commands.add_parser(
        "local", help="the local Nosana network service: status, start or stop",
        description="The local Nosana network your kernels and scripts share (one service "
                    "per user): status says where it listens, its pid, jobs and idleness; "
                    "start starts it now; stop stops it and every job on it.")
    service.add_argument("action", nargs="?", default="status",
                         choices=["status", "start", "stop"])
    args = parser.parse_args(argv)
    if args.command not in ("demo", "local"):
        parser.print_help()
        return 2
    from .errors import NosanaError

    try:
        if args.command == "local":
            return local_command(args.action)
        return demo(timeout=args.timeout, quiet=args.quiet)
    except NosanaError as err:
        print("\n".join(err._render_traceback_()), file=sys.stderr)
        return 1


def local_command(action: str) -> int:
    """``python -m nosana_magic local ACTION``: 0 when done (``status``: when it runs)."""
    from .network import local
    from .settings import Settings

    settings = Settings.from_env()
    if action == "start":
        info, started = local.ensure_service(settings)
        if started:
            print(f"started the local Nosana network at {info.url} (pid {info.pid})")
        else:
            print(f"the local Nosana network already runs at {info.url} (pid {info.pid})")
        return 0
    if action == "stop":
        stopped = local.stop_local_service(settings)
        print("no local Nosana network runs for this user" if stopped is None
              else f"stopped the local Nosana network (pid {stopped.pid})")
        return 0
    rows = local.describe_service(settings)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    return 0 if rows[0][1] == "running" else 1


if __name__ == "__main__":
    sys.exit(main())
