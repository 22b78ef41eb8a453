"""A definition a host would refuse, or could never run, is refused before anything is pinned
or listed: the job would otherwise be paid for, and the host's validation errors (which quote
the refused values) would go into its public result.

Each case's problem appears only once a ``${var:…}``/``${env:…}`` is resolved, or is one the
host's validator lets through and the host then fails the job for. The error is one located
line naming the reference, never its value; the devnode's IPFS and ledger stay empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from nosana_magic import runner
from nosana_magic.devnode import DevNode
from nosana_magic.job import run_confidential
from nosana_magic.jobdef import JobDefinitionError
from nosana_magic.network.api import ApiNetwork

from .conftest import definition, network_for, op, text

SECRET_ISH = "v4lue-that-must-not-show"


@pytest.fixture
def net(devnode: DevNode) -> Iterator[ApiNetwork]:
    network = network_for(devnode)
    yield network
    runner.run_sync(network.aclose(), timeout=10)


CASES: list[tuple[str, dict[str, Any], dict[str, object], str]] = [
    ("nul_in_image", definition(op("a", "true", image="${var:IMAGE}")),
     {"IMAGE": SECRET_ISH + "\x00"},
     "ops[0].args.image: a NUL character cannot be passed to a container "
     "(once ${var:IMAGE} is resolved)"),
    ("nul_in_env_value", definition(op("a", "true", env={"K": "${var:V}"})),
     {"V": "a\x00" + SECRET_ISH},
     "ops[0].args.env.K: a NUL character cannot be passed to a container "
     "(once ${var:V} is resolved)"),
    ("depends_on_unknown", definition(op("a", "true", execution={"depends_on": ["${var:DEP}"]})),
     {"DEP": SECRET_ISH},
     "ops[0].execution.depends_on[0]: depends_on names no op of this definition "
     "(once ${var:DEP} is resolved)"),
    ("depends_on_self", definition(op("a", "true", execution={"depends_on": ["${var:DEP}"]})),
     {"DEP": "a"},
     "ops[0].execution.depends_on[0]: an op cannot depend on itself "
     "(once ${var:DEP} is resolved)"),
    ("depends_on_cycle", definition(op("a", "true", execution={"depends_on": ["b"]}),
                                    op("b", "true", execution={"depends_on": ["a"]})), {},
     "ops[1].execution.depends_on[0]: depends_on makes a cycle (ops[0] → ops[1] → ops[0]): "
     "these ops would wait for each other until the job's timeout"),
    ("depends_on_other_group",
     definition(op("a", "true"), op("b", "true", execution={"group": "g", "depends_on": ["a"]})),
     {}, "ops[1].execution.depends_on[0]: ops[0] is in another execution group: hosts refuse "
         "a dependency across groups"),
    ("oversize", definition(op("a", "echo ${var:BLOB}")), {"BLOB": "x" * 150_000},
     "job definition is 150,"),
    ("invalid_after_resolving", definition(op("${var:ID}", "true")), {"ID": "two words"},
     "ops[0].id: op id must not contain spaces (once ${var:ID} is resolved)"),
    ("results_pattern_javascript_refuses",
     definition(op("a", "echo loss=1", results={"loss": "loss=(\\d+"})), {},
     "ops[0].results.loss: results pattern: JavaScript's RegExp refuses it (unterminated "
     "group at character 6)"),
    ("results_pattern_from_a_variable",
     definition(op("a", "echo loss=1", results={"loss": {"regex": "${var:RX}",
                                                         "logType": ["stdout"]}})),
     {"RX": "(?P<loss>\\d+)"},
     "ops[0].results.loss.regex: results pattern: JavaScript's RegExp refuses it (invalid "
     "group at character 1) (once ${var:RX} is resolved)"),
]


@pytest.mark.parametrize(("doc", "namespace", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_refused_before_anything_is_pinned_or_listed(
        devnode: DevNode, net: ApiNetwork, doc: dict[str, Any], namespace: dict[str, object],
        message: str) -> None:
    with pytest.raises(JobDefinitionError) as info:
        job = run_confidential(text(doc), network=net, namespace=namespace, env={},
                               timeout=60)
        job.raise_for_status()
    shown = str(info.value)
    assert len(shown.splitlines()) == 1 and message in shown, shown
    assert info.value.line is not None  # located: the line the cell shows
    assert SECRET_ISH not in shown and "x" * 100 not in shown
    assert devnode.ipfs.all() == {} and devnode.ledger.jobs == {}


def test_a_definition_the_host_runs_is_still_listed(devnode: DevNode, net: ApiNetwork) -> None:
    # The same shapes, valid: a dependency in the same group, a JavaScript-only pattern.
    doc = definition(op("a", "echo 'step 3/10'", results={"step": "(?<n>\\d+)/\\d+$"}),
                     op("b", "true", execution={"depends_on": ["${var:DEP}"]}))
    job = run_confidential(text(doc), network=net, namespace={"DEP": "a"}, env={}, timeout=60)
    assert job.done and job.ok, job.error
    assert len(devnode.ledger.jobs) == 1
    # $ is JavaScript's: the end of the line's text, and a line ends in its newline.
    assert "step" not in job.results
    assert json.dumps(job.ops["b"].exit_code) == "0"


def test_a_timeout_over_the_market_limit_prints_both_exactly(devnode: DevNode,
                                                              net: ApiNetwork) -> None:
    # 86,401 s against the local market's 86,400: one second over must not read "24h … (24h)".
    job = run_confidential(text(definition(op("a", "true"))), network=net, env={},
                           timeout=86_401)
    assert job.done and not job.ok
    assert str(job.error) == ("timeout 24h 1s exceeds market local-cpu's longest job (24h)")
    assert devnode.ipfs.all() == {} and devnode.ledger.jobs == {}
