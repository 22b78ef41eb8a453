"""Faults a devnode can inject, so tests can drive a client through every failure path.

A :class:`Faults` object is shared between the test thread (which flips its fields at run
time) and the devnode's event loop (which reads them), so the counters are taken under a lock.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

__all__ = ["Faults"]


@dataclass
class Faults:
    """Injected failures. Every field may be changed while the devnode runs.

    Route patterns are regular expressions searched in the path *below* the host's base URL
    (``/job/{id}/results``, ``/job/{id}/info``, ``/``), so ``"results$"`` targets the results
    route of every job and ``None`` targets every node-API route.
    """

    #: Each ``/log`` WebSocket subscription is dropped (close 1001) after this many frames.
    drop_ws_after_frames: int | None = None
    #: The next N node-API HTTP requests (that match ``fail_routes``) answer 500.
    fail_requests: int = 0
    #: Which node-API routes ``fail_requests`` applies to (a regex; ``None`` = all).
    fail_routes: str | None = None
    #: Node-API routes (a regex) that wait ``stall_seconds`` before being handled.
    stall_route: str | None = None
    stall_seconds: float = 0.0
    #: The host quits this many seconds after a job's ops start: its processes are killed,
    #: the flow ends ``failed`` (the node's "quit" stop reason) and the job ends STOPPED.
    host_quits_after: float | None = None
    #: ``GET /job/{id}/results`` never succeeds (as if the window were always closed).
    results_never_served: bool = False
    #: The next N ``POST /api/jobs/list`` list the job, then answer 500: the job exists, the
    #: client cannot tell (a backend that failed after its transaction went through).
    list_fails_after_listing: int = 0
    #: ``POST /api/jobs/list`` lists the job, then waits this long before answering (a client
    #: whose request times out first cannot tell either).
    list_answer_delay: float = 0.0

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take_failure(self, route: str) -> bool:
        """True (and one failure used up) when this request must answer 500."""
        with self._lock:
            if self.fail_requests <= 0:
                return False
            if self.fail_routes is not None and not re.search(self.fail_routes, route):
                return False
            self.fail_requests -= 1
            return True

    def take_list_failure(self) -> bool:
        """True (and one used up) when this listing must answer 500 after listing."""
        with self._lock:
            if self.list_fails_after_listing <= 0:
                return False
            self.list_fails_after_listing -= 1
            return True

    def stall_for(self, route: str) -> float:
        """Seconds to wait before handling a request to ``route`` (0 when not stalled)."""
        pattern = self.stall_route
        if pattern is None or self.stall_seconds <= 0 or not re.search(pattern, route):
            return 0.0
        return float(self.stall_seconds)
