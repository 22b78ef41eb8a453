"""The README's Quick start commands, read out of README.md, so CI runs what a user types.

    python3 .ci/quickstart.py check INSTALL TEST

exits 0 when INSTALL is the install half of command 1 (before its first ``&&``) and TEST is
command 2, verbatim; otherwise it says in one line what README.md has instead, and exits 1.

The Quick start section's ``bash`` blocks hold the numbered commands: a comment line
``# 1. …`` followed by its command line, then ``# 2. …`` and its command. Other lines of those
blocks (a venv step, Jupyter) are not numbered and are ignored. Anything else is an error with
a one-line message, so a README edit that CI could no longer follow fails loudly.
Standard library only: it runs before any virtual environment exists.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

_SECTION = re.compile(r"^## Quick start[ \t]*\n(.*?)(?=^## |\Z)", re.M | re.S)
_BASH_BLOCK = re.compile(r"^```bash[ \t]*\n(.*?)^```", re.M | re.S)
_NUMBERED = re.compile(r"^#\s*(\d+)\.\s")


class QuickstartError(ValueError):
    """README.md's Quick start does not have the shape CI reads."""


def numbered_commands(readme: str) -> dict[int, str]:
    """The Quick start's numbered commands: ``{1: "...", 2: "..."}``."""
    section = _SECTION.search(readme)
    if section is None:
        raise QuickstartError("README.md has no '## Quick start' section")
    commands: dict[int, str] = {}
    for block in _BASH_BLOCK.findall(section.group(1)):
        number: int | None = None
        for raw in block.splitlines():
            line = raw.strip()
            if not line:
                continue
            match = _NUMBERED.match(line)
            if match:
                number = int(match.group(1))
            elif line.startswith("#"):
                continue
            elif number is not None:
                if number in commands:
                    raise QuickstartError(f"README.md Quick start: two commands numbered {number}")
                commands[number] = line
                number = None
    if sorted(commands) != [1, 2]:
        raise QuickstartError(
            "README.md Quick start: expected commands numbered 1 and 2 (a '# 1. …' comment "
            f"line above each), found {sorted(commands) or 'none'}"
        )
    return commands


def install_command(readme: str) -> str:
    """The install half of command 1 (command 1 is ``<install> && <run the demo>``)."""
    first = numbered_commands(readme)[1]
    install = first.split(" && ")[0].strip()
    if "pip install" not in install:
        raise QuickstartError(f"README.md Quick start: command 1 does not start with a pip "
                              f"install: {first!r}")
    return install


def tests_command(readme: str) -> str:
    """Command 2, verbatim."""
    command = numbered_commands(readme)[2]
    if "pytest" not in command:
        raise QuickstartError(f"README.md Quick start: command 2 does not run pytest: "
                              f"{command!r}")
    return command


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "check":
        print("usage: quickstart.py check INSTALL TEST", file=sys.stderr)
        return 2
    try:
        readme = README.read_text(encoding="utf-8")
        said = {"install": install_command(readme), "test": tests_command(readme)}
    except (OSError, QuickstartError) as exc:
        print(f"quickstart.py: {exc}", file=sys.stderr)
        return 1
    for (what, expected), given in zip(said.items(), argv[1:], strict=True):
        if given != expected:
            print(f"quickstart.py: CI's {what} command {given!r} is not the README's "
                  f"{expected!r}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
