"""The exception every user-facing error derives from.

Notebooks show ``_render_traceback_`` instead of a traceback, so a failed job or a bad cell is
one clean line, and headless runs (nbclient, papermill) still record a real ``error`` output.
"""

from __future__ import annotations


class NosanaError(Exception):
    """Base class of every error this package raises on purpose.

    The message is written for the user: it says where and what, and never holds a secret.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {line}" if i == 0 else f"  {line}"
                for i, line in enumerate(str(self).splitlines() or [""])]
