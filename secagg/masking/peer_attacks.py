"""The attacks a malicious enterprise (not the server) plays on a masking round.

Used by :func:`secagg.masking.adversary.run_adversary` (see its module docstring for what each
attack's ``insecure`` positive control switches off). Attack code for tests and demonstrations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

from secagg.errors import InvalidParameter
from secagg.hazmat import shamir
from secagg.hazmat.handles import SecretBytes
from secagg.masking import keys, wire
from secagg.masking import messages as m
from secagg.masking.attack_arena import Arena

__all__ = ["play_peer_attack"]


def play_peer_attack(name: str, arena: Arena, *, attacker: int, victim: int,
                     insecure: bool) -> tuple[int, ...]:
    """Run enterprise attack ``name`` on ``arena``; returns the colluding enterprises."""
    if name == "low-order-key":
        _low_order_key(arena, attacker, insecure)
        return ()
    if name == "lying-holders":
        holders = sorted(arena.server._graph[victim])
        liars = tuple(holders[: len(holders) + 1 - arena.config.threshold])  # all but t
        with _without_share_checks(True) if insecure else contextlib.nullcontext():
            _lying_holders(arena, liars)
        return liars
    if name == "inconsistent-dealer":
        with _without_share_checks(False) if insecure else contextlib.nullcontext():
            _inconsistent_dealer(arena, attacker)
        return ()
    if name == "garbage-shares":
        if insecure:
            for c in arena.clients.values():
                c._insecure_global = True  # the old behaviour: an unreadable box aborts
        _garbage_shares(arena, attacker)
        return ()
    raise InvalidParameter(f"{name!r} is not an enterprise attack")


def _low_order_key(arena: Arena, attacker: int, insecure: bool) -> None:
    def from_client(i: int, data: bytes) -> bytes | None:
        if i == attacker and wire.peek_type(data) is m.AdvertiseKeys:
            msg: m.AdvertiseKeys = wire.decode(data)
            bad = dataclasses.replace(msg, mask_public=bytes(32), signature=b"")
            if arena.config.active:  # a member signs its own bad key: the signature is valid
                ident = arena.clients[attacker]._identity
                assert ident is not None
                bad = dataclasses.replace(bad, signature=ident.signing_key.sign(keys.advert_bytes(bad)))
            raw = wire.encode(bad)
            arena.clients[attacker]._my_advert = raw  # the attacker plays on with its bad key
            return raw
        return data

    arena.on_client = from_client
    if insecure:
        import secagg.masking.server as server_mod

        def lax(public: bytes, *, what: str = "") -> Any:
            if len(public) != 32:
                raise InvalidParameter(f"{what} must be 32 bytes")

        # The pre-fix server (length check only) for this run: the key reaches the directory,
        # where every honest neighbour's exchange with it fails and the round cannot complete.
        space = vars(server_mod)
        saved = space["validate_public_key"]
        space["validate_public_key"] = lax
        try:
            arena.run()
        finally:
            space["validate_public_key"] = saved
    else:
        arena.run()


def _garbage_shares(arena: Arena, attacker: int) -> None:
    def from_client(i: int, data: bytes) -> bytes | None:
        if i == attacker and wire.peek_type(data) is m.ShareKeys:
            msg: m.ShareKeys = wire.decode(data)
            junk = {p: os.urandom(len(b)) for p, b in msg.sealed_shares.items()}
            forged = dataclasses.replace(msg, sealed_shares=junk)
            identity = arena.clients[attacker]._identity
            if identity is not None:  # the attacker signs its garbage: the server must accept it
                forged = dataclasses.replace(forged, signature=identity.signing_key.sign(
                    keys.share_keys_bytes(forged)))
            return wire.encode(forged)
        return data

    arena.on_client = from_client
    arena.run()


def _lying_holders(arena: Arena, liars: Sequence[int]) -> None:
    def wrong(revealed: bytes) -> bytes:  # a well-formed field element, then the true salt
        return bytes(1) + os.urandom(shamir.SHARE_BYTES - 1) + revealed[shamir.SHARE_BYTES :]

    def from_client(i: int, data: bytes) -> bytes | None:
        if i in liars and wire.peek_type(data) is m.UnmaskShares:
            msg: m.UnmaskShares = wire.decode(data)
            return wire.encode(dataclasses.replace(
                msg, seed_shares={o: wrong(s) for o, s in msg.seed_shares.items()},
                mask_key_shares={o: wrong(s) for o, s in msg.mask_key_shares.items()}))
        return data

    arena.on_client = from_client
    arena.run()


def _inconsistent_dealer(arena: Arena, attacker: int) -> None:
    def from_client(i: int, data: bytes) -> bytes | None:
        if i == attacker and wire.peek_type(data) is m.AdvertiseKeys:
            # after advertising a commitment to one seed, deal (and mask with) another
            arena.clients[attacker]._seed = SecretBytes(os.urandom(32), label="self-mask-seed")
        return data

    arena.on_client = from_client
    arena.run()


@contextlib.contextmanager
def _without_share_checks(verdict: bool) -> Iterator[None]:
    """Switch off the server's check of revealed shares (positive controls only): every share
    is taken as matching (``verdict`` True) or none can be checked (False)."""
    space = vars(keys)
    saved = space["revealed_share_ok"]
    space["revealed_share_ok"] = lambda *args, **kwargs: verdict
    try:
        yield
    finally:
        space["revealed_share_ok"] = saved


