"""With DEBUG logging everywhere, no log record carries a secret, a frame or a body.

A notebook user who turns on ``logging.basicConfig(level=logging.DEBUG)`` gets every library's
debug output in the notebook (and so in the saved file): websockets logs frames, httpx/httpcore
log requests, uvicorn and asyncio their own. A job that prints its secret runs on the devnode
(in this process, as the local network does); every record of every logger is then searched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from nosana_magic import runner
from nosana_magic.devnode import DevNode
from nosana_magic.job import run_confidential

from .conftest import definition, network_for, op, text

SECRET = "Zx9Yw8Vu7Ts6Rq5Po4" + "-debug-token"


class Everything(logging.Handler):
    """Keeps every record, formatted as a handler would print it (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[tuple[str, str]] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, self.format(record)))


@pytest.fixture
def debug_everywhere() -> Iterator[Everything]:
    root = logging.getLogger()
    handler = Everything()
    # Libraries' loggers that set a level of their own are put to DEBUG too, as a user
    # debugging a connection would.
    names = ["", "websockets", "websockets.client", "websockets.server", "httpx", "httpcore",
             "uvicorn", "uvicorn.error", "asyncio", "nosana_magic"]
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def test_debug_logs_carry_no_secret_and_no_frame(devnode: DevNode,
                                                 debug_everywhere: Everything) -> None:
    network = network_for(devnode)
    try:
        doc = definition(op("talk", f"echo token=$TOKEN; echo 'err {SECRET[:4]}' >&2; "
                                    "echo $TOKEN | rev",
                            env={"TOKEN": "${env:TOKEN}"}, results={"t": "token=(.*)"}))
        job = run_confidential(text(doc), network=network, env={"TOKEN": SECRET}, timeout=60)
        assert job.done and job.ok, job.error
        assert "token=[secret:TOKEN]" in job.stdout  # the job had the secret and printed it
    finally:
        runner.run_sync(network.aclose(), timeout=10)
    records = debug_everywhere.records
    assert any(name.startswith("websockets") or name.startswith("httpcore")
               for name, _ in records), "DEBUG logging was not on"
    pieces = {SECRET[i:i + 5] for i in range(len(SECRET) - 4)}
    pieces |= {piece[::-1] for piece in pieces}
    leaks = [(name, message[:200]) for name, message in records
             if any(piece in message for piece in pieces)]
    assert leaks == []
    # No frame of the log stream is shown at all: its text is the job's output.
    frames = [(name, message[:200]) for name, message in records
              if '"path"' in message or "displayLog" in message or "token=" in message]
    assert frames == [], "\n".join(f"{n}: {m}" for n, m in frames)
