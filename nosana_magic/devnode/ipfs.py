"""A local IPFS: Pinata's pinning route and a gateway, backed by memory.

Documents are stored as compact JSON, so equal documents get equal CIDs, and every CID is a
real CIDv0 whose digest is the sha256 of the stored bytes (what a client may check).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..protocol import cid_of

__all__ = ["IpfsStore", "canonical_json", "ipfs_routes"]


def canonical_json(document: Any) -> bytes:
    """The bytes the store pins for ``document`` (compact, like JavaScript's JSON.stringify).

    Text that UTF-8 cannot hold (a lone surrogate, from a ``"\\ud800"`` escape) is written
    as ASCII ``\\u`` escapes instead, as the whole document then is.
    """
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(document, separators=(",", ":"), ensure_ascii=True).encode("ascii")


class IpfsStore:
    """Pinned documents by CID. Thread-safe: tests read it from outside the devnode's loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: dict[str, bytes] = {}

    def put(self, content: bytes) -> str:
        cid = cid_of(content)
        with self._lock:
            self._blobs[cid] = bytes(content)
        return cid

    def put_json(self, document: Any) -> str:
        return self.put(canonical_json(document))

    def get(self, cid: str) -> bytes:
        """The stored bytes; ``KeyError`` when nothing is pinned under ``cid``."""
        with self._lock:
            return self._blobs[cid]

    def get_json(self, cid: str) -> Any:
        return json.loads(self.get(cid))

    def all(self) -> dict[str, bytes]:
        """A copy of everything pinned (to assert, e.g., that no secret reached IPFS)."""
        with self._lock:
            return dict(self._blobs)

    def __contains__(self, cid: object) -> bool:
        with self._lock:
            return cid in self._blobs

    def __len__(self) -> int:
        with self._lock:
            return len(self._blobs)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _has_credentials(request: Request) -> bool:
    # Pinata wants a JWT (or an API key pair); any value will do locally, but a client that
    # forgets the header must find out here rather than on mainnet.
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and auth[7:].strip():
        return True
    return bool(request.headers.get("pinata_api_key")) and bool(
        request.headers.get("pinata_secret_api_key")
    )


def ipfs_routes(store: IpfsStore) -> list[Route]:
    """``POST /pinning/pinJSONToIPFS`` and ``GET /ipfs/{cid}``."""

    async def pin(request: Request) -> Response:
        if not _has_credentials(request):
            return _error(401, "missing credentials: send 'Authorization: Bearer <JWT>'")
        raw = await request.body()
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            return _error(400, "the body is not JSON")
        if isinstance(document, dict) and "pinataContent" in document:
            document = document["pinataContent"]
        if not isinstance(document, (dict, list)):
            return _error(400, "pinJSONToIPFS takes a JSON object or array")
        try:
            content = canonical_json(document)
        except RecursionError:
            return _error(400, "the body is not JSON")
        cid = store.put(content)
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        return JSONResponse(
            {"IpfsHash": cid, "PinSize": len(content), "Timestamp": stamp.replace("+00:00", "Z")}
        )

    async def get(request: Request) -> Response:
        cid = request.path_params["cid"]
        try:
            content = store.get(cid)
        except KeyError:
            return _error(404, f"no content pinned under {cid[:60]}")
        return Response(content, media_type="application/json")

    return [
        Route("/pinning/pinJSONToIPFS", pin, methods=["POST"]),
        Route("/ipfs/{cid}", get, methods=["GET"]),
    ]
