"""A step-by-step in-memory round for tests that need to intercept or forge messages."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from secagg.masking import ClientSession, MaskingConfig, ServerSession, encode_update, wire
from secagg.masking import messages as m
from secagg.masking.simulate import simulated_federation_for


@dataclass
class Round:
    config: MaskingConfig
    updates: list[np.ndarray]
    clients: dict[int, ClientSession] = field(default_factory=dict)
    server: ServerSession | None = None
    values: dict[int, np.ndarray] = field(default_factory=dict)
    seen_by_server: list[bytes] = field(default_factory=list)  # every byte the server saw

    @classmethod
    def start(cls, config: MaskingConfig, updates: list[np.ndarray]) -> tuple[Round, dict[int, bytes]]:
        rng = np.random.default_rng(0)
        r = cls(config, updates)
        n = config.num_clients
        roster, identities = simulated_federation_for(config) if config.roster_digest \
            else (None, None)
        for i in range(n):
            r.values[i] = encode_update(config, updates[i], rng=rng)
            r.clients[i] = ClientSession(config, i, r.values[i],
                                         identity=identities[i] if identities else None,
                                         roster=roster)
        r.server = ServerSession(config, roster=roster)
        return r, {i: wire.encode(c.start()) for i, c in r.clients.items()}

    def deliver(self, outbox: dict[int, bytes]) -> dict[int, bytes]:
        """Server receives ``outbox`` and advances; returns its encoded messages per client."""
        assert self.server is not None
        for data in outbox.values():
            self.seen_by_server.append(data)
            self.server.receive(data)
        out = self.server.advance_bytes()
        self.seen_by_server.extend(out.values())
        return out

    def reply(self, inbox: dict[int, bytes], skip: set[int] = frozenset()) -> dict[int, bytes]:  # type: ignore[assignment]
        return {i: self.clients[i].handle_bytes(d) for i, d in inbox.items() if i not in skip}

    def run_to_end(self, outbox: dict[int, bytes]) -> None:
        assert self.server is not None
        while True:
            inbox = self.deliver(outbox)
            if not inbox:
                return
            outbox = self.reply(inbox)


def decode(data: bytes) -> m.Message:
    return wire.decode(data)  # type: ignore[no-any-return]
