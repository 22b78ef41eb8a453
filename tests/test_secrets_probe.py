"""The secrets probe: generated definitions with a secret in every string position, and none of
it anywhere a user, a log or a saved notebook can see.

Three hundred and more definitions are generated from a fixed seed: secrets of every shape
(plain tokens, both quote kinds and backslashes, control characters, non-ASCII, PEM keys, JSON
credentials, values too large or with a NUL that the host would refuse) in every string
position of a definition (env values, ``cmd`` as a string and as a list, ``entrypoint``,
``work_dir``, health-check headers, registry passwords, resource tokens and keys). Each is
parsed, checked as it will be sent, and made into its placeholder: the value must be in the
body sent to the host and nowhere else (placeholder, reprs, errors); and every form a host can
print it in (as it is, ``repr``, JSON, line by line, cut at the 64 KiB line limit) must come out
of the redactor without a piece of it.

A subset runs end to end on the local network through an IPython shell, with DEBUG logging on
for every logger: each job prints its secret (on stdout and stderr, quoted, escaped, line by
line, across a line cut, into a result, into a refused work_dir). Then no piece of any secret
may be in the text view, the widget state, the handle (every attribute, its repr and HTML,
``flow``), the errors, IPython's history or the log records. A few more run in a real kernel
through nbclient, whose saved notebook (outputs, widget state, DEBUG output) is searched too.

A "piece" is any 8 characters of the random part of a secret: a line cut may leave at most 2
characters of a secret on either side (docs/security.md), so 8 is never legitimately shown.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import string
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import comm
import nbformat
import pytest
from comm.base_comm import BaseComm
from IPython.utils.capture import capture_output
from nbclient import NotebookClient

from nosana_magic.devnode import DevNode
from nosana_magic.display import JobView, summary_text
from nosana_magic.errors import JobDefinitionError, SecretError
from nosana_magic.jobdef import parse_job_definition
from nosana_magic.secrets import Redactor

from .conftest import ipython_shell

SEED = 11
GENERATED = 320
END_TO_END = 30
IN_NOTEBOOK = 4
WINDOW = 8
ALNUM = string.ascii_letters + string.digits
CUT = 64 * 1024  # the local network's line limit (docs/protocol.md §14)
REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------ generation


@dataclass
class Case:
    """One generated definition: its cell text, the secret's variable and value, the random
    pieces of that value (what must never show), and what it is expected to do."""

    index: int
    kind: str
    position: str
    mode: str
    name: str
    value: str
    tokens: list[str]
    doc: dict[str, Any]
    refused: bool = False
    windows: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.windows = {token[i:i + WINDOW] for token in self.tokens
                        for i in range(len(token) - WINDOW + 1)}


def _secret(rng: random.Random, kind: str) -> tuple[str, list[str]]:
    tokens = ["".join(rng.choice(ALNUM) for _ in range(rng.randint(14, 24))) for _ in range(4)]
    a, b, c, d = tokens
    value = {
        "plain": f"{a}{b}",
        "quotes": f"{a}'{b}\"{c}\\{d}",
        "control": f"{a}\t{b}\x01{c}\x1b[0m{d}\x7f",
        "unicode": f"{a}é€{b}😀{c}\u2028{d}",
        "pem": ("-----BEGIN PRIVATE KEY-----\n" + f"{a}{b}\n{c}+/{d}\n"
                "-----END PRIVATE KEY-----"),
        "json": json.dumps({"type": "service_account", "private_key_id": a,
                            "private_key": f"-----BEGIN KEY-----\n{b}\n-----END KEY-----\n",
                            "client_email": f"{c}@{d}.example"}, indent=2),
        # Refused before anything is sent: the resolved definition is over 100 kB, or has a NUL.
        "huge": a + "." * 110_000 + b,
        "nul": f"{a}\x00{b}",
    }[kind]
    return value, tokens


#: Where a secret goes (the positions that run end to end print it; the others are checked
#: without running).
RUNNABLE = ("env", "cmd", "args", "work_dir", "results")
STATIC_ONLY = ("entrypoint", "header", "docker", "hf", "s3", "global_env")
#: How an end-to-end job shows its secret.
MODES = ("stdout", "stderr", "repr", "json", "long", "result")


def _python(code: str) -> list[str]:
    return ["python3", "-c", code]


def _printing(mode: str, offset: int) -> list[str]:
    """A command that prints the environment variable ``S`` in ``mode``."""
    return {
        "stdout": ["sh", "-c", 'printf "%s\\n" "$S"'],
        "stderr": ["sh", "-c", 'printf "error: %s\\n" "$S" >&2; exit 3'],
        "repr": _python("import os; print('value', repr(os.environ['S']))"),
        "json": _python("import json, os; print(json.dumps({'v': os.environ['S']}))"),
        # The secret straddles the host's cut of a line over 64 KiB.
        "long": _python(f"import os; print('.' * {CUT - offset} + os.environ['S'] + '.' * 99)"),
        "result": ["sh", "-c", 'printf "V=%s\\n" "$S"'],
    }[mode]


def _op(args: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "container/run", "id": "probe", "args": {"image": "ubuntu:22.04", **args},
            **extra}


def _doc(ops: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    return {"version": "0.1", "type": "container", "meta": {"trigger": "cli"}, "ops": ops, **top}


def _build(rng: random.Random, index: int, kind: str, position: str) -> Case:
    name = f"S{index:03d}"
    ref = f"${{env:{name}}}"
    value, tokens = _secret(rng, kind)
    mode = rng.choice(MODES)
    offset = rng.randint(1, WINDOW * 2)
    env = {"S": ref}
    if position == "env":
        doc = _doc([_op({"cmd": _printing(mode, offset), "env": env})])
    elif position == "cmd":
        # The value inside the command line, in a quoted heredoc (it takes any character).
        doc = _doc([_op({"cmd": f"S=$(cat <<'END'\n{ref}\nEND\n); export S; "
                                + _shell(mode, offset)})])
    elif position == "args":
        doc = _doc([_op({"cmd": ["sh", "-c", 'S="$0"; export S; ' + _shell(mode, offset), ref]})])
    elif position == "work_dir":
        mode = "refused work_dir"  # the host refuses a work_dir outside the job's directory
        doc = _doc([_op({"cmd": "true", "work_dir": f"/../../{ref}"})])
    elif position == "results":
        mode = "result"
        doc = _doc([_op({"cmd": _printing("result", offset), "env": env},
                        results={"v": "V=(.*)"})])
    elif position == "entrypoint":
        doc = _doc([_op({"entrypoint": ["sh", "-c", ref], "cmd": "true"})])
    elif position == "header":
        doc = _doc([_op({"cmd": "true", "expose": [{"port": 8080, "health_checks": [{
            "type": "http", "path": "/", "method": "GET", "expected_status": 200,
            "headers": {"Authorization": f"Bearer {ref}"}, "continuous": False}]}]})])
    elif position == "docker":
        doc = _doc([_op({"cmd": "true", "authentication": {"docker": {
            "username": "me", "password": ref, "server": "registry.example"}}})])
    elif position == "hf":
        doc = _doc([_op({"cmd": "true", "resources": [{
            "type": "HF", "target": "/data", "repo": "org/model", "accessToken": ref}]})])
    elif position == "s3":
        doc = _doc([_op({"cmd": "true", "resources": [{
            "type": "S3", "target": "/data", "url": "s3://bucket", "IAM": {
                "REGION": "eu-1", "ACCESS_KEY_ID": "AKIAEXAMPLE", "SECRET_ACCESS_KEY": ref}}]})])
    else:  # global_env
        doc = _doc([_op({"cmd": _printing(mode, offset)})])
        doc["global"] = {"env": env}
    return Case(index, kind, position, mode, name, value, tokens, doc,
                refused=kind in ("huge", "nul"))


def _shell(mode: str, offset: int) -> str:
    """``_printing`` as one shell command line, reading ``$S``."""
    argv = _printing(mode, offset)
    return " ".join("'" + part.replace("'", "'\"'\"'") + "'" for part in argv)


def generate() -> list[Case]:
    """``GENERATED`` cases: every kind of secret in every position, then random ones."""
    rng = random.Random(SEED)
    kinds = ["plain", "quotes", "control", "unicode", "pem", "json"]
    cases: list[Case] = []
    for kind in [*kinds, "huge", "nul"]:
        for position in RUNNABLE + STATIC_ONLY:
            cases.append(_build(rng, len(cases), kind, position))
    while len(cases) < GENERATED:
        kind = rng.choice([*kinds, "huge", "nul"] if rng.random() < 0.1 else kinds)
        cases.append(_build(rng, len(cases), kind, rng.choice(RUNNABLE + STATIC_ONLY)))
    return cases


CASES = generate()


def _runnable() -> list[Case]:
    """The end-to-end subset: every kind in every runnable position, then every mode."""
    chosen: list[Case] = []
    seen: set[tuple[str, str]] = set()
    for case in CASES:
        if case.refused or case.position not in RUNNABLE:
            continue
        key = (case.kind, case.position)
        if key not in seen:
            seen.add(key)
            chosen.append(case)
    modes = {case.mode for case in chosen}
    for case in CASES:
        if (not case.refused and case.position in ("env", "args") and case.mode not in modes
                and case not in chosen):
            chosen.append(case)
            modes.add(case.mode)
    return chosen


E2E = _runnable()

# ------------------------------------------------------------------------------- leak search

_RUN = re.compile(f"[A-Za-z0-9]{{{WINDOW},}}")


def leaks(text: str, cases: list[Case]) -> list[str]:
    """The secrets' pieces in ``text`` (as ``NAME: piece``)."""
    owner = {window: case.name for case in cases for window in case.windows}
    found = []
    for match in _RUN.finditer(text):
        run = match.group()
        for i in range(len(run) - WINDOW + 1):
            name = owner.get(run[i:i + WINDOW])
            if name is not None:
                found.append(f"{name}: …{text[max(0, match.start() - 20):match.end() + 20]!r}")
                break
    return found


# ------------------------------------------------------------------------ without running


def host_forms(case: Case) -> list[list[str]]:
    """Every way a host can print the value: each a list of log lines, in order."""
    value = case.value
    forms = [[value], [repr(value)], [json.dumps(value)], [json.dumps(value, ensure_ascii=False)],
             [f"error: {value!r} is not a directory"], value.split("\n"),
             [json.dumps({"v": value}, indent=2)]]
    for offset in (1, 2, 3, WINDOW, len(value) // 2):
        line = "." * (CUT - offset) + value + "." * 40
        forms.append([line[i:i + CUT] for i in range(0, len(line), CUT)])
    return forms


def test_hundreds_of_definitions_were_generated_over_every_kind_and_position() -> None:
    assert len(CASES) >= 300
    assert {case.kind for case in CASES} == {"plain", "quotes", "control", "unicode", "pem",
                                            "json", "huge", "nul"}
    assert {case.position for case in CASES} == set(RUNNABLE + STATIC_ONLY)
    assert len(E2E) >= END_TO_END
    assert {case.mode for case in E2E} >= set(MODES) | {"refused work_dir"}
    assert {case.kind for case in E2E} == {"plain", "quotes", "control", "unicode", "pem",
                                           "json"}


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.name}-{case.kind}-{case.position}")
def test_the_secret_goes_only_into_the_body_sent_to_the_host(case: Case) -> None:
    source = json.dumps(case.doc, indent=2)
    assert not leaks(source, [case])  # the cell holds the reference only
    definition = parse_job_definition(source)
    env = {case.name: case.value}
    public = [json.dumps(definition.placeholder()), repr(definition), str(definition)]
    if case.refused:
        with pytest.raises((JobDefinitionError, SecretError)) as info:
            definition.check_resolved(env=env)
        message = str(info.value)
        assert f"${{env:{case.name}}}" in message, message  # names the reference
        public.append(message)
    else:
        definition.check_resolved(env=env)
        resolved = definition.resolve(env=env)
        assert leaks(resolved.body.decode(), [case])  # it really is sent to the host
        public += [repr(resolved), str(resolved)]
    assert leaks("\n".join(public), [case]) == []
    if case.refused:
        return  # never sent, so never printed by a host
    redactor = Redactor(env)
    for lines in host_forms(case):
        shown = [redactor.redact(line) for line in lines]
        assert leaks("\n".join(shown), [case]) == [], lines[0][:80]


# ------------------------------------------------------------------------- end to end


class RecordingComm(BaseComm):
    """Keeps every message the widgets would send to the frontend."""

    messages: list[str] = []  # noqa: RUF012 (one list for every instance, by design)

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        RecordingComm.messages.append(json.dumps(data, default=str))


class Everything(logging.Handler):
    """Keeps every record, formatted as a handler would print it (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


LOGGERS = ["", "websockets", "websockets.client", "websockets.server", "httpx", "httpcore",
           "uvicorn", "uvicorn.error", "uvicorn.access", "asyncio", "nosana_magic"]


def _cell(case: Case) -> str:
    return f"%%nosana_confidential -o job{case.index} --timeout 2m\n" + json.dumps(
        case.doc, indent=2)


def _handle_texts(job: Any) -> list[str]:
    """The handle, every public attribute of it, and what shows it."""
    texts = [repr(job), job._repr_html_(), summary_text(job), repr(job.flow),
             job.flow.model_dump_json() if job.flow is not None else ""]
    for name in dir(job):
        if name.startswith("_"):
            continue
        try:
            with warnings.catch_warnings():  # deprecated aliases are attributes too
                warnings.simplefilter("ignore", DeprecationWarning)
                value = getattr(job, name)
        except Exception as exc:  # an attribute that raises: its message counts too
            value = exc
        if not callable(value) or isinstance(value, Exception):
            texts.append(f"{name}={value!r}")
    texts += [line.text for line in job.logs]
    return texts


@pytest.fixture(scope="module")
def ran(shell_devnode: DevNode, tmp_path_factory: pytest.TempPathFactory,
        ) -> Iterator[dict[str, Any]]:
    """Run every end-to-end case through one shell with DEBUG logging everywhere."""
    handler = Everything()
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in LOGGERS}
    with pytest.MonkeyPatch.context() as mp:
        for case in E2E:
            mp.setenv(case.name, case.value)
        mp.setenv("NOSANA_DEVNODE_URL", shell_devnode.url)
        mp.setenv("NOSANA_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        mp.delenv("NOSANA_NETWORK", raising=False)
        for name in LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)
        root.addHandler(handler)
        try:
            with ipython_shell() as shell, capture_output() as captured:
                results = {case.name: shell.run_cell(_cell(case), store_history=True)
                           for case in E2E}
                jobs = {case.name: shell.user_ns[f"job{case.index}"] for case in E2E}
                shell.run_line_magic("nosana", "jobs")
                for job in list(jobs.values())[:4]:
                    shell.run_cell(f"%nosana logs {job.address}", store_history=True)
                history = list(shell.history_manager.get_range(output=True, raw=True))
                history += list(shell.history_manager.get_range(output=True, raw=False))
                namespace = [shell.user_ns["In"], shell.user_ns["Out"]]
                yield {"results": results, "jobs": jobs, "captured": captured,
                       "history": history, "namespace": namespace, "logs": handler.lines}
        finally:
            root.removeHandler(handler)
            for name, level in saved.items():
                logging.getLogger(name).setLevel(level)


def _by_name() -> dict[str, Case]:
    return {case.name: case for case in E2E}


def test_every_job_really_had_its_secret(ran: dict[str, Any]) -> None:
    for case in E2E:
        job = ran["jobs"][case.name]
        assert job.done, (case.name, job.status)
        shown = job.stdout + job.stderr + repr(job.results)
        if case.mode == "refused work_dir":
            assert job.status == "failed", job.status
            shown = job.reason + shown
        assert f"[secret:{case.name}]" in shown, (case.name, case.mode, shown[-300:])


def test_no_piece_in_the_handle(ran: dict[str, Any]) -> None:
    for case in E2E:
        texts = _handle_texts(ran["jobs"][case.name])
        assert leaks("\n".join(texts), E2E) == [], case.name


def test_no_piece_in_the_text_view_the_errors_or_magic_output(ran: dict[str, Any]) -> None:
    captured = ran["captured"]
    shown = [captured.stdout, captured.stderr]
    shown += [json.dumps(output.data, default=str) for output in captured.outputs]
    for result in ran["results"].values():
        error = result.error_in_exec
        if error is not None:
            shown += [str(error), repr(error)]
            if hasattr(error, "_render_traceback_"):
                shown += error._render_traceback_()
    assert any(result.error_in_exec is not None for result in ran["results"].values())
    assert leaks("\n".join(shown), E2E) == []


def test_no_piece_in_the_widget_view(ran: dict[str, Any], monkeypatch: pytest.MonkeyPatch
                                     ) -> None:
    RecordingComm.messages = []
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    shown = []
    for case in E2E:
        view = JobView(ran["jobs"][case.name], mode="widget").show()
        view.finish()
        shown += [json.dumps(view._log_w.outputs), view._header_w.value, view._urls_w.value]
    assert RecordingComm.messages
    assert leaks("\n".join(RecordingComm.messages + shown), E2E) == []


def test_no_piece_in_history_or_in_out(ran: dict[str, Any]) -> None:
    text = json.dumps(ran["history"], default=str) + repr(ran["namespace"])
    assert "${env:" in text
    assert leaks(text, E2E) == []


def test_no_piece_in_debug_logs(ran: dict[str, Any]) -> None:
    lines = ran["logs"]
    assert any(line.startswith(("websockets", "httpcore", "httpx")) for line in lines), \
        "DEBUG logging was not on"
    assert leaks("\n".join(lines), E2E) == []


# ------------------------------------------------------------------------ saved notebook


def _notebook_cases() -> list[Case]:
    """A few more cases, for the notebook: multi-line, quoted, control, a cut line."""
    wanted = [("pem", "stdout"), ("quotes", "repr"), ("control", "json"), ("plain", "long")]
    rng = random.Random(SEED + 1)
    chosen = []
    for kind, mode in wanted:
        for _ in range(200):
            case = _build(rng, 900 + len(chosen), kind, "env")
            if case.mode == mode:
                chosen.append(case)
                break
    return chosen


NOTEBOOK_CASES = _notebook_cases()


def test_no_piece_in_a_saved_notebook(tmp_path: Path) -> None:
    assert len(NOTEBOOK_CASES) == IN_NOTEBOOK
    cells = [nbformat.v4.new_code_cell(
        "import logging\nlogging.basicConfig(level=logging.DEBUG, force=True)\n"
        "%load_ext nosana_magic")]
    cells += [nbformat.v4.new_code_cell(_cell(case)) for case in NOTEBOOK_CASES]
    cells.append(nbformat.v4.new_code_cell(
        "\n".join(f"print(job{case.index}.stdout, job{case.index}.status)"
                  for case in NOTEBOOK_CASES) + f"\njob{NOTEBOOK_CASES[0].index}"))
    nb = nbformat.v4.new_notebook(cells=cells)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOSANA_")}
    env.update({case.name: case.value for case in NOTEBOOK_CASES})
    env["NOSANA_DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)", "language": "python"}))
    env["JUPYTER_PATH"] = str(tmp_path / "jupyter")
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k not in env]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        client = NotebookClient(nb, timeout=120, startup_timeout=120, kernel_name="python3",
                                allow_errors=True, resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    saved = tmp_path / "probe.ipynb"
    nbformat.write(nb, saved)
    text = saved.read_text()
    last = nb.cells[-1]
    printed = "".join(out.get("text", "") for out in last.outputs)
    for case in NOTEBOOK_CASES:  # each job ran and printed its secret, redacted
        assert f"[secret:{case.name}]" in printed, printed[-500:]
    assert "DEBUG" in text  # the kernel's DEBUG records are in the saved file
    assert "application/vnd.jupyter.widget" in text  # and the widget views' state
    assert leaks(text, NOTEBOOK_CASES) == []
