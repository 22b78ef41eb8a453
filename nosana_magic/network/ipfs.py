"""IPFS for the real networks: pinning through Pinata's API, reads through Nosana's gateway.

Only the public *placeholder* of a confidential job is ever pinned (the real definition goes
to the host directly). The upload credential is a Pinata JWT, passed in by whoever builds the
client (:meth:`SolanaNetwork.from_settings` reads it through the settings: the
``NOSANA_PINATA_JWT`` or ``PINATA_JWT`` environment variable, else ``pinata_jwt`` in the
user's credentials file, ``~/.config/nosana_magic/credentials.json`` on Linux).

The JWT is kept in a private attribute and is never printed: not in the repr, not in an error
message, not in a log line. Reads through the gateway are anonymous.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx

from ..errors import IpfsError
from ..protocol import CidError, cid_to_digest
from ..settings import credentials_file
from ..transport import Retry, http_client_for, one_line

__all__ = [
    "DEFAULT_GATEWAY",
    "DEFAULT_PINATA_API",
    "IpfsError",
    "PinataClient",
]

log = logging.getLogger(__name__)

DEFAULT_PINATA_API = "https://api.pinata.cloud"
DEFAULT_GATEWAY = "https://nosana.mypinata.cloud/ipfs"

_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Pinning and gateway reads: three attempts, 0.5 s then 1 s apart.
PINATA_RETRY = Retry(first=0.5, cap=4.0, attempts=3, total=120.0)


def _no_credential_message() -> str:
    return (
        "no IPFS upload credential: set NOSANA_PINATA_JWT to a Pinata API JWT "
        "(https://app.pinata.cloud/developers/api-keys), or put "
        f'{{"pinata_jwt": "…"}} in {credentials_file()}'
    )


class PinataClient:
    """Pin JSON documents with Pinata (``POST /pinning/pinJSONToIPFS``) and read them back.

    ``jwt``: the upload credential (``None``: none; pinning then says how to set one). Reads
    work without one. ``http``: an ``httpx.AsyncClient`` to share (not closed by :meth:`aclose`).
    Every request is bounded: ``timeout_s`` each, tried again as ``retry`` says.
    """

    def __init__(
        self,
        jwt: str | None = None,
        *,
        api_url: str = DEFAULT_PINATA_API,
        gateway: str = DEFAULT_GATEWAY,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 20.0,
        retry: Retry = PINATA_RETRY,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.gateway = gateway.rstrip("/")
        self._jwt = jwt.strip() if jwt and jwt.strip() else None
        self._http = http
        self._own_http = http is None
        self.timeout_s = timeout_s
        self.retry = retry

    @property
    def has_credential(self) -> bool:
        return self._jwt is not None

    def __repr__(self) -> str:
        state = "set" if self._jwt else "unset"
        return f"PinataClient(api={self.api_url!r}, gateway={self.gateway!r}, jwt={state})"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a PinataClient holds a credential and cannot be pickled")

    def require_credential(self) -> None:
        """Raise :class:`IpfsError` now when no upload credential is set (before any money)."""
        if self._jwt is None:
            raise IpfsError(_no_credential_message())

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = http_client_for(self.api_url, timeout=self.timeout_s)
        return self._http

    def _clean(self, text: str) -> str:
        """Server text made safe to show: one line, short, without the credential."""
        if self._jwt:
            text = text.replace(self._jwt, "***")
        return one_line(text)

    async def _request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        """``method url`` until it answers with a status that retrying cannot change."""
        backoff = self.retry.backoff()
        last = ""
        while True:
            try:
                response = await self._client().request(
                    method, url, timeout=self.timeout_s, **kwargs
                )
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout_s:g} s"
            except httpx.HTTPError as exc:
                # The exception text may carry the URL; the class name is enough.
                last = f"cannot connect ({type(exc).__name__})"
            else:
                if response.status_code not in _RETRY_STATUSES:
                    return response
                last = f"HTTP {response.status_code}"
            if not await backoff.wait():
                host = httpx.URL(url).host
                raise IpfsError(f"{what} failed: {host} {last} (after {backoff.attempt} attempts)")

    async def pin_json(self, document: Mapping[str, Any]) -> str:
        """Pin ``document``; returns its CIDv0 (``Qm…``), checked to be one."""
        self.require_credential()
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        response = await self._request(
            "POST",
            f"{self.api_url}/pinning/pinJSONToIPFS",
            "pinning the job definition to IPFS",
            content=body,
            headers={"Authorization": f"Bearer {self._jwt}", "Content-Type": "application/json"},
        )
        host = httpx.URL(self.api_url).host
        if response.status_code in (401, 403):
            raise IpfsError(
                f"Pinata ({host}) refused the upload credential (HTTP {response.status_code}): "
                "check NOSANA_PINATA_JWT (a Pinata API JWT with pinJSONToIPFS permission)"
            )
        if response.status_code >= 400:
            raise IpfsError(
                f"Pinata ({host}) refused the upload: HTTP {response.status_code} "
                f"{self._clean(response.text)}"
            )
        try:
            answer = response.json()
        except ValueError:
            raise IpfsError(f"Pinata ({host}) answered with something that is not JSON") from None
        cid = answer.get("IpfsHash") if isinstance(answer, dict) else None
        if not isinstance(cid, str):
            raise IpfsError(f"Pinata ({host}) answered without an IpfsHash")
        try:
            cid_to_digest(cid)
        except CidError:
            raise IpfsError(
                f"Pinata returned {cid[:60]!r}, not a CIDv0 (Qm…): the jobs program stores "
                "only sha2-256 CIDv0 digests"
            ) from None
        return cid

    async def get_json(self, cid: str) -> Any:
        """The JSON document at ``cid``, read through the gateway."""
        try:
            cid_to_digest(cid)
        except CidError as exc:
            raise IpfsError(str(exc)) from None
        response = await self._request("GET", f"{self.gateway}/{cid}", f"reading {cid} from IPFS")
        if response.status_code >= 400:
            raise IpfsError(
                f"reading {cid} from IPFS failed: {httpx.URL(self.gateway).host} "
                f"HTTP {response.status_code}"
            )
        try:
            return response.json()
        except ValueError:
            raise IpfsError(f"{cid} is not a JSON document") from None

    async def aclose(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
