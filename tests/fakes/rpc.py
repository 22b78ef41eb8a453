"""A Solana JSON-RPC endpoint (HTTP ``POST /`` and the WebSocket at ``/``) over a FakeChain.

Serves the methods ``SolanaNetwork`` uses, in the JSON shapes of a real validator, so the real
``solana`` 0.41 ``AsyncClient`` / ``SolanaWsClient`` parse them: ``getLatestBlockhash``,
``getBlockHeight``, ``sendTransaction``, ``getSignatureStatuses``, ``getAccountInfo``,
``getMultipleAccounts``, ``getProgramAccounts`` (``memcmp`` / ``dataSize`` filters),
``getBalance``, ``getTokenAccountBalance``, ``getMinimumBalanceForRentExemption``,
``getRecentPrioritizationFees``, ``getHealth``, ``getVersion``, ``getSlot``; over the
WebSocket ``accountSubscribe`` / ``accountUnsubscribe`` with ``accountNotification`` pushes
and ``signatureSubscribe``.

Faults for tests: :meth:`FakeRpc.fail` makes the next calls of a method answer with an HTTP
status, :attr:`FakeRpc.disabled` lists methods answered with "disabled" errors,
:attr:`FakeRpc.unconfirmed` hides transaction statuses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from solders.account import Account
from solders.pubkey import Pubkey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from nosana_magic import chain
from nosana_magic.protocol import b58decode

from .chain import FakeChain, RpcError

__all__ = ["FakeRpc"]


def _account_json(account: Account | None) -> dict[str, Any] | None:
    if account is None:
        return None
    data = bytes(account.data)
    return {
        "data": [base64.b64encode(data).decode(), "base64"],
        "executable": account.executable,
        "lamports": account.lamports,
        "owner": str(account.owner),
        "rentEpoch": 0,
        "space": len(data),
    }


def _matches(data: bytes, filters: list[dict[str, Any]]) -> bool:
    for item in filters:
        if "dataSize" in item:
            if len(data) != int(item["dataSize"]):
                return False
        elif "memcmp" in item:
            spec = item["memcmp"]
            offset = int(spec["offset"])
            raw = spec["bytes"]
            wanted = base64.b64decode(raw) if spec.get("encoding") == "base64" else b58decode(raw)
            if data[offset:offset + len(wanted)] != wanted:
                return False
        else:
            raise RpcError(-32602, f"Invalid params: unknown filter {item}")
    return True


class FakeRpc:
    """The ASGI app. ``calls`` counts the methods asked for (tests assert on it)."""

    def __init__(self, fake: FakeChain, *, priority_fees: list[int] | None = None) -> None:
        self.chain = fake
        self.calls: Counter[str] = Counter()
        self.disabled: set[str] = set()
        #: Transactions land but their status is never reported (a confirmation that hangs).
        self.unconfirmed = False
        self.priority_fees = priority_fees if priority_fees is not None else [0, 5000, 20000]
        self._faults: dict[str, list[int]] = {}
        self._faults_lock = threading.Lock()
        self._subscription_ids = itertools.count(1)
        self.app = Starlette(routes=[
            # Any path: providers put API keys in it (``/v2/<key>``).
            Route("/{path:path}", self._http, methods=["POST"]),
            WebSocketRoute("/{path:path}", self._websocket),
        ])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def fail(self, method: str, status: int = 503, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` (or ``"*"``) answer HTTP ``status``."""
        with self._faults_lock:
            self._faults.setdefault(method, []).extend([status] * times)

    def faults_left(self, method: str) -> int:
        with self._faults_lock:
            return len(self._faults.get(method, []))

    def _fault(self, method: str) -> int | None:
        with self._faults_lock:
            for key in (method, "*"):
                queue = self._faults.get(key)
                if queue:
                    return queue.pop(0)
        return None

    # ------------------------------------------------------------------ HTTP

    async def _http(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"jsonrpc": "2.0", "id": None,
                                 "error": {"code": -32700, "message": "Parse error"}})
        if isinstance(body, list):
            return JSONResponse([self._one(item) for item in body])
        method = body.get("method", "") if isinstance(body, dict) else ""
        status = self._fault(method)
        if status is not None:
            return JSONResponse({"error": "injected fault"}, status_code=status)
        return JSONResponse(self._one(body))

    def _one(self, body: Any) -> dict[str, Any]:
        ident = body.get("id") if isinstance(body, dict) else None
        method = body.get("method", "") if isinstance(body, dict) else ""
        params = body.get("params") or [] if isinstance(body, dict) else []
        self.calls[method] += 1
        try:
            if method in self.disabled:
                raise RpcError(-32010, f"Method {method} has been disabled on this RPC node "
                               "(RPC call or parameters have been disabled)")
            handler: Callable[[list[Any]], Any] | None = getattr(self, f"rpc_{method}", None)
            if handler is None:
                raise RpcError(-32601, "Method not found")
            result = handler(params)
        except RpcError as exc:
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.data is not None:
                error["data"] = exc.data
            return {"jsonrpc": "2.0", "id": ident, "error": error}
        return {"jsonrpc": "2.0", "id": ident, "result": result}

    def _context(self, value: Any) -> dict[str, Any]:
        return {"context": {"apiVersion": "2.2.0", "slot": self.chain.slot}, "value": value}

    @staticmethod
    def _key(text: Any) -> Pubkey:
        try:
            return Pubkey.from_string(str(text))
        except ValueError:
            raise RpcError(-32602, f"Invalid param: Invalid {text!r}") from None

    # ------------------------------------------------------------------ methods

    def rpc_getHealth(self, params: list[Any]) -> str:
        return "ok"

    def rpc_getVersion(self, params: list[Any]) -> dict[str, Any]:
        return {"solana-core": "2.2.0-fake", "feature-set": 0}

    def rpc_getSlot(self, params: list[Any]) -> int:
        return self.chain.slot

    def rpc_getBlockHeight(self, params: list[Any]) -> int:
        return self.chain.slot

    def rpc_getLatestBlockhash(self, params: list[Any]) -> dict[str, Any]:
        blockhash = self.chain.latest_blockhash()
        return self._context({"blockhash": str(blockhash),
                              "lastValidBlockHeight": self.chain.slot + 150})

    def rpc_sendTransaction(self, params: list[Any]) -> str:
        raw, config = params[0], (params[1] if len(params) > 1 else {})
        encoding = config.get("encoding", "base58")
        data = base64.b64decode(raw) if encoding == "base64" else b58decode(raw)
        return self.chain.send(data)

    def rpc_getSignatureStatuses(self, params: list[Any]) -> dict[str, Any]:
        values: list[Any] = []
        for signature in params[0]:
            status = self.chain.statuses.get(signature)
            if status is None or self.unconfirmed:
                values.append(None)
            else:
                slot, err = status
                values.append({
                    "slot": slot, "confirmations": None, "err": err,
                    "status": {"Ok": None} if err is None else {"Err": err},
                    "confirmationStatus": "finalized",
                })
        return self._context(values)

    def rpc_getAccountInfo(self, params: list[Any]) -> dict[str, Any]:
        return self._context(_account_json(self.chain.get(self._key(params[0]))))

    def rpc_getMultipleAccounts(self, params: list[Any]) -> dict[str, Any]:
        return self._context([_account_json(self.chain.get(self._key(k))) for k in params[0]])

    def rpc_getBalance(self, params: list[Any]) -> dict[str, Any]:
        return self._context(self.chain.sol(self._key(params[0])))

    def rpc_getTokenAccountBalance(self, params: list[Any]) -> dict[str, Any]:
        key = self._key(params[0])
        account = self.chain.get(key)
        if account is None or account.owner != chain.TOKEN_PROGRAM:
            raise RpcError(-32602, "Invalid param: could not find account")
        amount = int.from_bytes(bytes(account.data)[64:72], "little")
        return self._context({"amount": str(amount), "decimals": 6,
                              "uiAmount": amount / 1e6, "uiAmountString": str(amount / 1e6)})

    def rpc_getMinimumBalanceForRentExemption(self, params: list[Any]) -> int:
        return self.chain.rent(int(params[0]))

    def rpc_getRecentPrioritizationFees(self, params: list[Any]) -> list[dict[str, int]]:
        slot = self.chain.slot
        return [{"slot": slot - i, "prioritizationFee": fee}
                for i, fee in enumerate(self.priority_fees)]

    def rpc_getProgramAccounts(self, params: list[Any]) -> Any:
        program = self._key(params[0])
        config = params[1] if len(params) > 1 else {}
        filters = config.get("filters") or []
        found = []
        for key, account in self.chain.program_accounts(program):
            if _matches(bytes(account.data), filters):
                found.append({"pubkey": str(key), "account": _account_json(account)})
        return self._context(found) if config.get("withContext") else found

    # ------------------------------------------------------------------ WebSocket

    async def _websocket(self, ws: WebSocket) -> None:
        await ws.accept()
        loop = asyncio.get_running_loop()
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        accounts: dict[int, Pubkey] = {}
        signatures: dict[int, str] = {}

        def changed(keys: list[Pubkey]) -> None:  # called on the chain's thread
            loop.call_soon_threadsafe(_push, keys)

        def _push(keys: list[Pubkey]) -> None:
            for sub, key in list(accounts.items()):
                if key in keys:
                    account = self.chain.get(key)
                    value = _account_json(account) or {
                        "data": ["", "base64"], "executable": False, "lamports": 0,
                        "owner": str(Pubkey.default()), "rentEpoch": 0, "space": 0,
                    }
                    outbox.put_nowait(self._notification("accountNotification", sub,
                                                         self._context(value)))
            for sub, signature in list(signatures.items()):
                if signature in self.chain.statuses:
                    _slot, err = self.chain.statuses[signature]
                    outbox.put_nowait(self._notification(
                        "signatureNotification", sub, self._context({"err": err})))
                    del signatures[sub]

        remove = self.chain.on_change(changed)

        async def writer() -> None:
            while True:
                await ws.send_text(json.dumps(await outbox.get()))

        task = asyncio.create_task(writer())
        try:
            while True:
                try:
                    request = json.loads(await ws.receive_text())
                except WebSocketDisconnect:
                    return
                method = request.get("method", "")
                params = request.get("params") or []
                ident = request.get("id")
                self.calls[method] += 1
                if method == "accountSubscribe":
                    sub = next(self._subscription_ids)
                    accounts[sub] = self._key(params[0])
                    reply: dict[str, Any] = {"jsonrpc": "2.0", "result": sub, "id": ident}
                elif method == "signatureSubscribe":
                    sub = next(self._subscription_ids)
                    signatures[sub] = str(params[0])
                    reply = {"jsonrpc": "2.0", "result": sub, "id": ident}
                    loop.call_soon(_push, [])
                elif method in ("accountUnsubscribe", "signatureUnsubscribe"):
                    sub = int(params[0])
                    found = accounts.pop(sub, None) or signatures.pop(sub, None)
                    reply = {"jsonrpc": "2.0", "result": found is not None, "id": ident}
                else:
                    reply = {"jsonrpc": "2.0", "id": ident,
                             "error": {"code": -32601, "message": "Method not found"}}
                outbox.put_nowait(reply)
        finally:
            remove()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @staticmethod
    def _notification(method: str, sub: int, result: Any) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": method,
                "params": {"result": result, "subscription": sub}}
