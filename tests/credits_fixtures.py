"""Helpers for credit tests: a project that lists with an API key and signs through the
devnode's signing service (the way a credits user reaches a host)."""

from __future__ import annotations

from typing import Any

import httpx

from nosana_magic.devnode import DevNode
from nosana_magic.protocol import now_ms

from .devnode_fixtures import PLACEHOLDER, Project

#: The signing service's route below its base URL.
SIGN_ROUTE = "/auth/sign-message/external"


class CreditProject(Project):
    """A :class:`Project` whose ledger calls carry ``Bearer <API key>`` and whose node
    headers come from the signing service (signed by the key's project key)."""

    def __init__(self, node: DevNode, key: str | None = None) -> None:
        super().__init__(node)
        self.key = key if key is not None else node.api_key

    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def address(self) -> str:
        """The key's project address (what jobs listed with it have as ``project``)."""
        return self.node.ledger.credits.account(self.key).address

    def sign(self, message: str = "nosana-auth", **body: Any) -> httpx.Response:
        return self.http.post(f"{self.node.client_manager_url}{SIGN_ROUTE}",
                              json={"message": message, **body}, headers=self.api_headers())

    def header(self, message: str = "nosana-auth", **kw: Any) -> dict[str, str]:
        response = self.sign(message)
        assert response.status_code == 200, response.text
        signature = response.json()["signature"]
        base = signature if ":" in signature else f"{message}:{signature}"
        return {"Authorization": f"{base}:{now_ms()}"}

    def list_answer(self, *, market: str = "local-cpu", timeout: int = 60,
                    cid: str | None = None) -> httpx.Response:
        body = {"ipfsHash": cid or self.pin(PLACEHOLDER), "market": market, "timeout": timeout}
        return self.http.post("/api/jobs/list", json=body, headers=self.api_headers())

    def balance(self) -> dict[str, Any]:
        response = self.http.get("/api/credits/balance", headers=self.api_headers())
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result
