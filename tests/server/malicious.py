"""A malicious enterprise, written with the library: a member of the roster (its own token and
identity) that misbehaves in masking rounds. Run as a process by
``tests/server/test_malicious_enterprise.py``::

    python -m tests.server.malicious --server URL --token-file T --identity ID --roster R \\
        --attack low-order-key|garbage-shares --rounds N

``low-order-key``: posts a key advert whose X25519 mask key is the all-zero (low-order) point,
correctly signed by its own roster identity, then stays silent for the round.
``garbage-shares``: takes part honestly except that every sealed share box it posts is random
bytes of the right size; it goes on (masked input) until the protocol leaves it out.
``inconsistent-dealer``: advertises a commitment to one self-mask seed, then deals shares of
(and masks with) another, consistently for every holder, and otherwise plays honestly.

Each thing the server answered is printed as one line ``malicious-event {json}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

import httpx
import numpy as np

from secagg.errors import SecAggError
from secagg.hazmat.handles import SecretBytes
from secagg.identity import Identity, Roster
from secagg.masking import ClientSession, MaskingConfig, encode_update, keys, wire
from secagg.masking import messages as m

OCTET = {"Content-Type": "application/octet-stream"}


def event(**data: Any) -> None:
    print("malicious-event " + json.dumps(data), flush=True)


class Evil:
    def __init__(self, args: argparse.Namespace) -> None:
        with open(args.token_file) as f:
            token = f.read().strip()
        self.http = httpx.Client(base_url=args.server, timeout=60.0,
                                 headers={"Authorization": f"Bearer {token}"})
        self.identity = Identity.load(args.identity)
        self.roster = Roster.load(args.roster)
        self.attack = args.attack

    def next_round(self, after: int) -> dict[str, Any]:
        while True:
            resp = self.http.get("/v1/rounds/next", params={"after": after, "wait": 10})
            if resp.status_code == 200:
                info: dict[str, Any] = resp.json()
                return info

    def post(self, rid: int, msg: m.ClientMessage, what: str) -> httpx.Response:
        resp = self.http.post(f"/v1/rounds/{rid}/messages", content=wire.encode(msg),
                              headers=OCTET, params={"wait": 10})
        body = {} if resp.headers.get("content-type", "").startswith("application/octet") \
            else resp.json()
        event(message=what, status=resp.status_code, error=body.get("error"),
              detail=body.get("detail"))
        return resp

    def next_message(self, rid: int, resp: httpx.Response, seen: int) -> tuple[bytes, int] | None:
        """The server's next message to us (from the post's wait, else the inbox)."""
        while True:
            if resp.status_code == 200 and resp.headers.get("X-Secagg-State") == "message":
                return resp.content, int(resp.headers["X-Secagg-Stage-No"])
            state = resp.headers.get("X-Secagg-State")
            if resp.status_code >= 400 or state in ("done", "dropped", "failed"):
                event(message="inbox", status=resp.status_code, state=state)
                return None
            resp = self.http.get(f"/v1/rounds/{rid}/inbox", params={"after": seen, "wait": 10})

    def round(self, info: dict[str, Any]) -> None:
        rid, me = info["round_id"], info["client_id"]
        config = MaskingConfig.from_dict(info["config"])
        values = encode_update(config, np.zeros(config.vector_length, np.float32))
        session = ClientSession(config, me, values, identity=self.identity, roster=self.roster)
        advert = session.start()
        if self.attack == "low-order-key":
            evil = dataclasses.replace(advert, mask_public=b"\x00" * 32, signature=b"")
            evil = dataclasses.replace(evil, signature=self.identity.signing_key.sign(
                keys.advert_bytes(evil)))  # signed by its own roster identity: not a forgery
            self.post(rid, evil, "advert with an all-zero mask key")
            return  # silent for the rest of the round
        resp = self.post(rid, advert, "advert")
        if self.attack == "inconsistent-dealer":  # the advert committed to the old seed
            session._seed = SecretBytes(os.urandom(32), label="self-mask-seed")
            self.play_on(rid, resp, 0, session)
            return
        got = self.next_message(rid, resp, 0)
        if got is None:
            return
        share = wire.decode(session.handle_bytes(got[0]), expect=m.ShareKeys)
        garbage = dataclasses.replace(share, sealed_shares={
            v: os.urandom(len(box)) for v, box in share.sealed_shares.items()})
        garbage = dataclasses.replace(garbage, signature=self.identity.signing_key.sign(
            keys.share_keys_bytes(garbage)))  # signed by its own identity: accepted by the server
        resp = self.post(rid, garbage, "garbage share boxes")
        self.play_on(rid, resp, got[1], session)

    def play_on(self, rid: int, resp: httpx.Response, seen: int, session: ClientSession) -> None:
        """Answer every later message honestly until the round ends or leaves this client out."""
        while True:
            got = self.next_message(rid, resp, seen)
            if got is None:
                return
            try:
                reply = wire.decode(session.handle_bytes(got[0]))
            except SecAggError as exc:
                event(message="left out", reason=str(exc))
                return
            seen = got[1]
            resp = self.post(rid, reply, type(reply).__name__)


def main() -> int:
    p = argparse.ArgumentParser()
    for flag in ("--server", "--token-file", "--identity", "--roster"):
        p.add_argument(flag, required=True)
    p.add_argument("--attack", choices=("low-order-key", "garbage-shares", "inconsistent-dealer"),
                   required=True)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    evil = Evil(args)
    after = -1
    for _ in range(args.rounds):
        info = evil.next_round(after)
        after = info["index"]
        event(message="round", index=after)
        evil.round(info)
    time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
