"""What binds a CKKS round to its parties: the public SEAL material a config implies, and the
check that a config is bound to the roster this enterprise pinned."""

from __future__ import annotations

from secagg.ckks.checks import Check, CheckFailed
from secagg.ckks.config import CKKSRoundConfig
from secagg.hazmat.seal_codec import SealSession
from secagg.identity import Roster

__all__ = ["check_roster_binding", "session_for"]


def session_for(config: CKKSRoundConfig) -> SealSession:
    """The public SEAL material for ``config`` (identical on every party)."""
    p = config.params
    return SealSession(
        poly_modulus_degree=p.poly_modulus_degree,
        coeff_modulus_bits=p.coeff_modulus_bits,
        level_primes=p.level_primes,
        scale_bits=p.scale_bits,
    )


def check_roster_binding(config: CKKSRoundConfig, roster: Roster) -> None:
    """Refuse a config not bound to ``roster`` (digest) or naming clients outside it."""
    if roster.digest() != config.roster_digest:
        raise CheckFailed(
            "setup", Check.ROSTER_DIGEST,
            f"the round config is bound to roster {config.roster_digest.hex()[:16]}..., but the "
            f"pinned roster of federation {roster.federation!r} has digest "
            f"{roster.digest().hex()[:16]}...; refusing a round over members this enterprise did "
            "not pin",
        )
    outside = sorted(set(config.client_ids) - set(roster.ids))
    if outside:
        raise CheckFailed("setup", Check.ROSTER_DIGEST,
                          f"the round config names client(s) {outside[:8]}, not in the pinned roster")
