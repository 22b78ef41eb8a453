"""The repository documents itself: every citation points into it, and CI follows the README.

* No file of the package, the tests, the benchmarks or the docs names a source outside the
  repository (a research folder, a sibling checkout): a user's clone has none of them.
* Every ``docs/<name>.md §N`` a comment or doc cites is a numbered section of that doc, and
  every relative link in the docs leads to a file that exists.
* ``.ci/run`` reads the README's Quick start commands out of README.md, and what it reads is
  what the README says.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SCANNED = ("nosana_magic", "tests", "benchmarks", "docs", "notebooks", ".ci")
TOP_FILES = ("README.md", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".ipynb", ".json", ".txt", ".cfg", ".sh", ""}

#: Ways a file could name a source that only exists outside the repository.
FORBIDDEN = [
    (re.compile(r"reference/"), "a reference/ folder"),
    (re.compile(r"shared/"), "a shared/ folder"),
    (re.compile(r"/work/"), "a path on a development machine"),
    (re.compile(r"nosana-(?:host-protocol|onchain|real-host|credits)\.md"), "a research note"),
    (re.compile(r"jupyter-magic-anchors\.md|DESIGN\.md"), "a research note"),
    (re.compile(r"\breference\s+(?:section\s+|§\s*)?\d"), "a numbered reference section"),
    (re.compile(r"\breference\s+``?nosana", re.I), "a research note"),
    (re.compile(r"\((?:see\s+)?reference\b"), "an outside reference"),
    (re.compile(r"\b(?:from|see|follows|per|in) the reference\b", re.I), "an outside reference"),
]

#: ``docs/protocol.md §9``, ``protocol.md §3–§8``, ``[protocol.md §21](…)``, ``§13, §14 and §9``.
CITATION = re.compile(
    r"(?:docs/)?(?P<doc>[\w-]+)\.md\)?(?P<sections>(?:(?:\s*,\s*|\s*[–-]\s*|\s+and\s+|\s+)"
    r"§\s?\d+(?:\.\d+)*)+)"
)
SECTION = re.compile(r"§\s?(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", re.M)
LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)#\s]+)(?:#[^)\s]*)?\)")


def _files() -> Iterator[Path]:
    for top in TOP_FILES:
        yield REPO / top
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or ".venv" in path.parts:
                continue
            if path.suffix in TEXT_SUFFIXES and path != Path(__file__).resolve():
                yield path


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _sections(doc: Path) -> set[str]:
    return set(HEADING.findall(_text(doc)))


def test_the_scan_sees_the_whole_repository() -> None:
    names = {path.relative_to(REPO).as_posix() for path in _files()}
    assert {"README.md", "docs/protocol.md", "nosana_magic/host.py", "tests/conftest.py",
            "benchmarks/bench_local.py", ".ci/run"} <= names


@pytest.mark.parametrize("pattern, what", FORBIDDEN, ids=[p.pattern for p, _ in FORBIDDEN])
def test_no_file_names_a_source_outside_the_repository(pattern: re.Pattern[str],
                                                        what: str) -> None:
    hits = [
        f"{path.relative_to(REPO)}:{_text(path)[:m.start()].count(chr(10)) + 1}: {m.group(0)!r}"
        for path in _files()
        for m in pattern.finditer(_text(path))
    ]
    assert not hits, f"{what} is named; cite docs/protocol.md instead:\n" + "\n".join(hits)


def _citations(path: Path) -> Iterator[tuple[str, str, int]]:
    """``(doc name, section, line)`` for every ``§`` citation in ``path``.

    In a doc, a bare ``§N`` (no doc named before it) is a section of that doc itself.
    """
    text = _text(path)
    claimed: list[tuple[int, int]] = []
    for match in CITATION.finditer(text):
        claimed.append(match.span("sections"))
        line = text[: match.start()].count("\n") + 1
        for section in SECTION.findall(match.group("sections")):
            yield match.group("doc"), section, line
    if path.parent == DOCS:
        for match in SECTION.finditer(text):
            if not any(start <= match.start() < end for start, end in claimed):
                yield path.stem, match.group(1), text[: match.start()].count("\n") + 1


def test_every_cited_section_exists() -> None:
    problems: list[str] = []
    cited = 0
    for path in _files():
        for doc, section, line in _citations(path):
            cited += 1
            target = DOCS / f"{doc}.md"
            where = f"{path.relative_to(REPO)}:{line}"
            if not target.is_file():
                problems.append(f"{where}: cites {doc}.md §{section}, but docs/{doc}.md is missing")
            elif section not in _sections(target):
                problems.append(f"{where}: cites docs/{doc}.md §{section}, which has no such "
                                "section")
    assert not problems, "\n".join(problems)
    assert cited > 50  # the scan does find the package's citations


def test_the_protocol_doc_numbers_its_sections_in_order() -> None:
    top = [int(n) for n in re.findall(r"^## (\d+)\. ", _text(DOCS / "protocol.md"), re.M)]
    assert top == list(range(1, len(top) + 1)) and len(top) >= 20


def test_the_protocol_doc_contents_links_lead_to_its_headings() -> None:
    text = _text(DOCS / "protocol.md")
    anchors = {_github_anchor(h) for h in re.findall(r"^#{2,6} (.+)$", text, re.M)}
    linked = re.findall(r"\]\(#([^)]+)\)", text)
    assert linked and not [a for a in linked if a not in anchors]


def _github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_in_the_docs_lead_to_files() -> None:
    broken = []
    for path in [REPO / "README.md", *sorted(DOCS.glob("*.md")),
                 *sorted((REPO / "benchmarks").glob("*.md"))]:
        for target in LINK.findall(_text(path)):
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(REPO)}: {target}")
    assert not broken, "\n".join(broken)


# --------------------------------------------------------------------------- CI and README


def _quickstart() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_quickstart", REPO / ".ci" / "quickstart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ci_reads_the_readme_quick_start_commands() -> None:
    quickstart = _quickstart()
    readme = _text(REPO / "README.md")
    # The two commands the project promises (a fresh clone must keep both true).
    assert quickstart.numbered_commands(readme) == {
        1: "python -m pip install -e . && python -m nosana_magic demo",
        2: 'python -m pip install -e ".[test]" && python -m pytest',
    }
    assert quickstart.install_command(readme) == "python -m pip install -e ."
    assert quickstart.tests_command(readme) == (
        'python -m pip install -e ".[test]" && python -m pytest'
    )
    run = _text(REPO / ".ci" / "run")
    assert """install_command='python -m pip install -e .'""" in run
    assert """tests_command='python -m pip install -e ".[test]" && python -m pytest'""" in run
    assert 'python3 .ci/quickstart.py check "$install_command" "$tests_command"' in run
    assert 'bounded 15m bash -c "$tests_command"' in run
    # And the check refuses a command the README does not have.
    assert quickstart.main(["check", "python -m pip install -e .",
                            'python -m pip install -e ".[test]" && python -m pytest']) == 0
    assert quickstart.main(["check", "python -m pip install -e .", "python -m pytest"]) == 1
    assert "git clone --quiet --no-local" in run


def test_the_readme_venv_step_comes_before_the_quick_start_commands() -> None:
    readme = _text(REPO / "README.md")
    venv = readme.index("python3 -m venv .venv && . .venv/bin/activate")
    assert readme.index("## Quick start") < venv < readme.index("# 1. ")


QUICKSTART_README = """\
# x

## Quick start

```bash
python3 -m venv .venv && . .venv/bin/activate
```

```bash
# 1. Run the demo
python -m pip install -e . && python -m nosana_magic demo

# 2. Run the tests
python -m pip install -e ".[test]" && python -m pytest -q
```

## Next
```bash
# 3. not in the Quick start
echo no
```
"""


def test_the_quick_start_reader_ignores_unnumbered_lines_and_other_sections() -> None:
    quickstart = _quickstart()
    assert quickstart.numbered_commands(QUICKSTART_README) == {
        1: "python -m pip install -e . && python -m nosana_magic demo",
        2: 'python -m pip install -e ".[test]" && python -m pytest -q',
    }


@pytest.mark.parametrize("readme, message", [
    ("# x\n\n## Usage\n", "no '## Quick start' section"),
    ("## Quick start\n\n```bash\npython -m pytest\n```\n", "found none"),
    ("## Quick start\n\n```bash\n# 1. a\npip install x\n# 1. b\npip install y\n```\n",
     "two commands numbered 1"),
    ("## Quick start\n\n```bash\n# 1. a\npip install x && demo\n# 3. c\npytest\n```\n",
     "found [1, 3]"),
])
def test_the_quick_start_reader_refuses_a_readme_it_cannot_follow(readme: str,
                                                                  message: str) -> None:
    quickstart = _quickstart()
    with pytest.raises(quickstart.QuickstartError, match=re.escape(message)):
        quickstart.numbered_commands(readme)


def test_the_quick_start_reader_checks_what_each_command_does() -> None:
    quickstart = _quickstart()
    readme = "## Quick start\n\n```bash\n# 1. a\nmake demo\n# 2. b\nmake check\n```\n"
    with pytest.raises(quickstart.QuickstartError, match="does not start with a pip install"):
        quickstart.install_command(readme)
    with pytest.raises(quickstart.QuickstartError, match="does not run pytest"):
        quickstart.tests_command(readme)
