"""Secrets a job prints in the shapes that escaped the redactor: cut by the host's line limit,
spread over several lines (a PEM key, JSON credentials), quoted by a host message.

One job on the devnode receives three secrets and prints them every way; nothing the handle
shows or hands out (logs, stdout, per-op logs, the raw flow, results, node lines, errors) may
hold a piece of any of them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest

from nosana_magic import runner
from nosana_magic.devnode import DevNode
from nosana_magic.devnode.executor import MAX_LINE_CHARS
from nosana_magic.job import ConfidentialJob, run_confidential
from nosana_magic.network.api import ApiNetwork
from nosana_magic.secrets import escaped_forms

from .conftest import definition, network_for, op, text

TOKEN = "hf_Zq8Xw7Vu6Ts5Rq4Po3Nm2Lk1Ji0Hg9Fe8"
PEM = ("-----BEGIN PRIVATE KEY-----\n"
       "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
       "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
       "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ\n"
       "-----END PRIVATE KEY-----\n")
#: Both quote kinds, a tab and a control character: every quoting writes it differently.
AWKWARD = "it's a \"pass\"\tw0rd\x01!"

PRINTER = r"""
import json, os, sys
token, key, odd = os.environ["TOKEN"], os.environ["KEY"], os.environ["ODD"]
# The host cuts this line at its limit, 10 characters into the token.
print("x" * (int(sys.argv[1]) - 10) + token + " and the rest of the line")
print(key, end="")
print("key as repr:", repr(key))
print("creds:", json.dumps({"private_key": key, "password": odd}, indent=2))
print("odd:", odd, "| repr:", repr(odd), "| json:", json.dumps(odd))
print("token=" + token, file=sys.stderr)
"""


@pytest.fixture
def net(devnode: DevNode) -> Iterator[ApiNetwork]:
    network = network_for(devnode)
    yield network
    runner.run_sync(network.aclose(), timeout=10)


def _shown(job: ConfidentialJob) -> str:
    parts: list[str] = [repr(job), job._repr_html_(), str(job.error), job.stdout, job.stderr,
                        repr(job.warnings), json.dumps(job.results, default=str)]
    parts += [line.text for line in job.logs]
    parts += [line.text for line in job.node_logs]
    for result in job.ops.values():
        parts += [line.text for line in result.logs]
        parts.append(json.dumps(result.results, default=str))
    if job.flow is not None:
        parts.append(json.dumps(job.flow.to_wire()))
    try:
        job.raise_for_status()
    except BaseException as exc:
        parts.append(str(exc))
    return "\n".join(parts)


def _leaks(shown: str) -> list[str]:
    found = [TOKEN[i:i + 6] for i in range(len(TOKEN) - 5) if TOKEN[i:i + 6] in shown]
    for line in PEM.splitlines():
        body = line.strip("-")
        found += [body[i:i + 12] for i in range(0, len(body) - 11, 4) if body[i:i + 12] in shown]
    found += [form for form in escaped_forms(AWKWARD) if form in shown]
    return found


def test_no_piece_of_a_secret_shows_however_it_was_printed(devnode: DevNode,
                                                           net: ApiNetwork) -> None:
    env = {"TOKEN": TOKEN, "KEY": PEM, "ODD": AWKWARD}
    secrets = {"TOKEN": "${env:TOKEN}", "KEY": "${env:KEY}", "ODD": "${env:ODD}"}
    doc = definition(
        op("print", [sys.executable, "-c", PRINTER, str(MAX_LINE_CHARS)], env=secrets,
           results={"tok": "token=(.*)", "line": "(-----BEGIN.*)"}),
        # The host's own messages quote the values: a work_dir that leaves the job's
        # directory, a command that cannot start.
        op("escape", "true", work_dir="../" + "${env:ODD}"),
        op("nocmd", ["/nonexistent/${env:ODD}/${env:TOKEN}"]),
    )
    job: ConfidentialJob = run_confidential(text(doc), network=net, env=env, timeout=60)
    assert job.done, job.error
    printed = job.ops["print"]
    assert printed.exit_code == 0
    # The secrets reached the job (redacted on the way in), cut where the host cuts.
    cut = [line.text for line in printed.logs if line.text.startswith("xxxx")]
    assert len(cut) == 1 and cut[0].endswith("[secret:TOKEN]")
    after = [line.text for line in printed.logs if line.text.endswith("and the rest of the line")]
    assert after == ["[secret:TOKEN] and the rest of the line"]
    assert "[secret:KEY]" in job.stdout and "odd: [secret:ODD]" in job.stdout
    assert job.ops["escape"].exit_code == 2 and job.ops["nocmd"].exit_code == 2
    assert any("[secret:ODD]" in line.text for line in job.node_logs)
    assert _leaks(_shown(job)) == []
