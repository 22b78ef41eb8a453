"""One readable line from the program logs of a failed transaction."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["program_error_message"]

# Anchor: "AnchorError [caused by account: X|thrown in file:line|occurred]. Error Code: C.
# Error Number: N. Error Message: M."
_ANCHOR = re.compile(
    r"AnchorError (?:caused by account: (?P<account>\w+)|thrown in \S+|occurred)\. "
    r"Error Code: (?P<code>\w+)\. Error Number: (?P<number>\d+)\. "
    r"Error Message: (?P<message>.*?)\.?\s*$"
)
_LOG_ERROR = re.compile(r"^Program log: Error: (?P<message>.+)$")
# Runtime lines without the "Program log:" prefix (system program, allocation).
_RUNTIME = re.compile(r"^(?:Transfer|Allocate|Create Account): .+$")
_FAILED = re.compile(r"^Program (?P<program>\w+) failed: (?P<reason>.+)$")
_MAX = 300


def program_error_message(logs: Iterable[str]) -> str | None:
    """The most telling error in ``logs``, or None when they hold none.

    Anchor error numbers are ambiguous (two enums of the jobs program both start at 6000), so
    the code name and message are kept: ``"NotInMarketQueue (6021): This job is not ..."``.
    """
    lines = [line.strip() for line in logs]
    found: str | None = None
    for line in lines:
        anchor = _ANCHOR.search(line)
        if anchor:
            found = f"{anchor['code']} ({anchor['number']}): {anchor['message']}"
            if anchor["account"]:
                found += f" (account: {anchor['account']})"
            break
    if found is None:
        for line in lines:
            match = _LOG_ERROR.match(line) or _RUNTIME.match(line)
            if match:
                found = match["message"] if "message" in match.groupdict() else match[0]
                break
    if found is None:
        # The outermost failure is logged last; it names the program that gave up.
        for line in reversed(lines):
            failed = _FAILED.match(line)
            if failed:
                found = f"program {failed['program']} failed: {failed['reason']}"
                break
    if found is None:
        return None
    found = " ".join(found.split())
    return found if len(found) <= _MAX else found[: _MAX - 1] + "…"
