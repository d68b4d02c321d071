"""A protocol client driven step by step from a test (to hold a round at a chosen stage)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from secagg.masking import ClientSession, MaskingConfig, encode_update, wire
from secagg_clients.runtime import OCTET
from tests.server.conftest import Federation

__all__ = ["OCTET", "ManualClient"]


class ManualClient:
    def __init__(self, fed: Federation, i: int, info: dict[str, Any], update: np.ndarray) -> None:
        self.fed, self.i, self.round_id = fed, i, info["round_id"]
        config = MaskingConfig.from_dict(info["config"])
        self.session = ClientSession(config, i, encode_update(config, update),
                                     identity=fed.identity(i), roster=fed.roster)
        self.seen = 0
        self.sent: list[bytes] = []

    def post(self, body: bytes) -> httpx.Response:
        with self.fed.as_client(self.i) as c:
            return c.post(f"/v1/rounds/{self.round_id}/messages", content=body, headers=OCTET)

    def send(self, body: bytes) -> None:
        resp = self.post(body)
        assert resp.status_code == 202, resp.text
        self.sent.append(body)

    def advertise(self) -> None:
        self.send(wire.encode(self.session.start()))

    def inbox(self, wait: float = 10.0) -> httpx.Response:
        with self.fed.as_client(self.i) as c:
            return c.get(f"/v1/rounds/{self.round_id}/inbox",
                         params={"after": self.seen, "wait": wait})

    def step(self) -> None:
        """Fetch the next server message and answer it."""
        resp = self.inbox()
        assert resp.headers.get("X-Secagg-State") == "message", (resp.status_code, resp.text)
        self.seen = int(resp.headers["X-Secagg-Stage-No"])
        self.send(self.session.handle_bytes(resp.content))
