"""Pinata's pinning API and an IPFS gateway, in memory.

``POST /pinning/pinJSONToIPFS`` (``Authorization: Bearer <jwt>``) stores the JSON body and
answers ``{"IpfsHash", "PinSize", "Timestamp"}`` with a CIDv0 of the stored bytes;
``GET /ipfs/{cid}`` serves it. ``fail(status, times)`` makes the next pin calls fail.

``store``: where documents live; anything with ``put(bytes) -> cid`` and ``get(cid) -> bytes``
(``KeyError`` when absent), e.g. a devnode's ``IpfsStore``, so emulated hosts read what the
client pinned and the client reads what the hosts posted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nosana_magic.protocol import cid_of

__all__ = ["BlobStore", "FakePinata"]


class BlobStore(Protocol):
    def put(self, content: bytes) -> str: ...

    def get(self, cid: str) -> bytes: ...


class _DictStore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, content: bytes) -> str:
        cid = cid_of(content)
        with self._lock:
            self.blobs[cid] = bytes(content)
        return cid

    def get(self, cid: str) -> bytes:
        with self._lock:
            return self.blobs[cid]


class FakePinata:
    def __init__(self, jwt: str = "test-pinata-jwt", *, store: BlobStore | None = None) -> None:
        self.jwt = jwt
        self.store: BlobStore = store if store is not None else _DictStore()
        self.pinned: list[str] = []
        self.pins = 0
        self.auth_headers_seen: list[str] = []
        self.on_pin: list[Callable[[str, bytes], None]] = []
        self._faults: list[int] = []
        self._lock = threading.Lock()
        self.cid_override: str | None = None
        self.app = Starlette(routes=[
            Route("/pinning/pinJSONToIPFS", self._pin, methods=["POST"]),
            Route("/ipfs/{cid}", self._get, methods=["GET"]),
        ])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def fail(self, status: int = 503, times: int = 1) -> None:
        with self._lock:
            self._faults.extend([status] * times)

    def put(self, document: Any) -> str:
        return self.store.put(json.dumps(document, separators=(",", ":")).encode())

    def get(self, cid: str) -> Any:
        return json.loads(self.store.get(cid))

    async def _pin(self, request: Request) -> Response:
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if fault is not None:
            return JSONResponse({"error": "injected fault"}, status_code=fault)
        header = request.headers.get("authorization", "")
        self.auth_headers_seen.append(header)
        if header != f"Bearer {self.jwt}":
            return JSONResponse({"error": {"reason": "INVALID_CREDENTIALS",
                                           "details": "Invalid/expired credentials"}},
                                status_code=401)
        raw = await request.body()
        try:
            json.loads(raw)
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        cid = self.store.put(raw)
        if self.cid_override is not None:
            cid = self.cid_override
        with self._lock:
            self.pinned.append(cid)
            self.pins += 1
        for hook in list(self.on_pin):
            hook(cid, raw)
        return JSONResponse({
            "IpfsHash": cid, "PinSize": len(raw),
            "Timestamp": datetime.now(timezone.utc).isoformat(),
        })

    async def _get(self, request: Request) -> Response:
        try:
            raw = self.store.get(request.path_params["cid"])
        except KeyError:
            return Response("not found", status_code=404)
        return Response(raw, media_type="application/json")
