"""IPython magics (the cell magic arrives with the job client)."""

from __future__ import annotations

from IPython.core.interactiveshell import InteractiveShell


def register(shell: InteractiveShell) -> None:
    """Register the magics with ``shell``."""


def unregister(shell: InteractiveShell) -> None:
    """Undo :func:`register`."""
