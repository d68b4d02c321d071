"""The decryption policy of a threshold CKKS setup: how many parties may collude with the server,
how many signatures a decryption statement needs, and how many uploaders a decrypted sum must have.

A partial decryption is computed from the round's seed, the uploader set ``U`` and the decrypting
set alone; the aggregate it is applied to does not enter it. So what a server learns is decided
by which ``U`` the honest parties agree to decrypt, and two mistakes give an update away:

* *One small sum* (``U = {victim} + colluders``): the release is the victim's update plus what
  the colluders know. Bounded by ``min_uploaders``: every decrypted sum holds at least
  ``min_uploaders - corrupt`` honest uploads.
* *Two sums of one round* (``U`` and ``U - {victim}`` shown to different honest decryptors): the
  difference of the releases is the victim's update. Every party signs once per round a
  statement ``(setup, round, U, SHA-256 of the aggregate)`` and decrypts only a statement that
  it signed itself and that ``quorum`` distinct roster members signed. Honest parties sign once,
  so two different statements of one round both reach the quorum only if ``2 * quorum - n``
  signers signed both, i.e. are corrupt: with ``quorum > (n + corrupt) / 2`` that cannot happen.

``corrupt`` (``c``) is an assumption, as in masking mode: the number of parties that may collude
with the server, at most ``t - 1`` (with ``t`` colluders the keys themselves fall). By default it
is the roster policy's worst case ``ceil(corrupt_rate * n)``; a setup that assumes fewer corrupt
parties than the pinned roster is refused. The trade-off it sets: the statement stage needs
``quorum = max(t, floor((n + c) / 2) + 1)`` signers (at most ``n - quorum`` parties may be absent
when the server collects signatures; afterwards ``n - t`` may vanish before the partial
decryptions), and at most ``n - min_uploaders`` parties may miss the upload. ``min_uploaders``
defaults to ``max(t, c + 2)``: a decrypted sum then holds at least ``t - c`` honest uploads (at
least two), the guarantee of a masking round (whose sum has at least ``t`` members), and ``n - t``
parties may miss the upload as they may miss any other stage when the quorum is ``t``. An
operator may raise it (up to ``n``: ``min(n, t + c)`` gives ``t`` honest uploads) or lower it to
``c + 2`` (two honest uploads), never below. The whole
policy is part of the setup digest (:func:`.transport.setup_digest`), so the server cannot
choose it per round.

The guarantee is only as good as ``corrupt``: with the roster default (``c = 1`` of 10, quorum 6)
five colluders still sign both statements and each needs just one honest signer, so the two-sums
attack goes through; the tests run it with ``c = t - 1 = 5`` (quorum 8), where it is refused,
and with the quorum lowered to ``t``, where it succeeds
(``tests/ckks/test_threshold_attacks.py``).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from secagg.errors import InvalidParameter

__all__ = ["DecryptionPolicy", "decryption_policy", "default_min_uploaders"]


@dataclass(frozen=True, slots=True)
class DecryptionPolicy:
    """A validated policy (build it with :func:`decryption_policy`)."""

    parties: int
    threshold: int
    corrupt: int
    min_uploaders: int

    def __post_init__(self) -> None:
        n, t, c = self.parties, self.threshold, self.corrupt
        for name in ("parties", "threshold", "corrupt", "min_uploaders"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidParameter(f"policy {name} must be an integer, found {value!r}")
        if not 2 <= t <= n:
            raise InvalidParameter(f"threshold must be in [2, parties={n}], found {t}")
        if not 0 <= c <= t - 1:
            raise InvalidParameter(
                f"the policy assumes {c} corrupt parties; threshold decryption with t={t} "
                f"protects against at most t - 1 = {t - 1} (raise the threshold)")
        if not c + 2 <= self.min_uploaders <= n:
            raise InvalidParameter(
                f"min_uploaders must be in [corrupt + 2 = {c + 2}, parties = {n}] (a decrypted "
                f"sum must hold at least two honest uploads), found {self.min_uploaders}")

    @property
    def quorum(self) -> int:
        """Distinct roster signatures a decryption statement needs: ``max(t, floor((n+c)/2)+1)``,
        so that two different statements of one round cannot both reach it with ``c`` corrupt
        parties signing both."""
        return max(self.threshold, (self.parties + self.corrupt) // 2 + 1)

    @property
    def min_honest_uploaders(self) -> int:
        return self.min_uploaders - self.corrupt

    def to_bytes(self) -> bytes:
        """Canonical encoding, bound into the setup digest."""
        return b"policy/v1" + struct.pack(">IIII", self.parties, self.threshold, self.corrupt,
                                          self.min_uploaders)


def default_min_uploaders(parties: int, threshold: int, corrupt: int) -> int:
    """``max(t, c + 2)`` (at most ``n``): every decrypted sum holds at least ``t - c`` honest
    uploads, and at least two; the default of :func:`decryption_policy` and the least a client
    accepts in a round (:mod:`.session`)."""
    return min(parties, max(threshold, corrupt + 2))


def decryption_policy(parties: int, threshold: int, *, corrupt: int | None = None,
                      corrupt_rate: float | None = None,
                      min_uploaders: int | None = None) -> DecryptionPolicy:
    """The policy for ``parties`` and ``threshold``: ``corrupt`` given, or
    ``ceil(corrupt_rate * parties)`` (the roster's ``corrupt_rate``; 0.05 if neither is given);
    ``min_uploaders`` given, or ``max(threshold, corrupt + 2)`` (at most ``parties``)."""
    if corrupt is None:
        rate = 0.05 if corrupt_rate is None else corrupt_rate
        if not 0 <= rate < 0.5:
            raise InvalidParameter(f"corrupt_rate must be in [0, 0.5), found {rate!r}")
        corrupt = math.ceil(rate * parties)
    elif corrupt_rate is not None:
        raise InvalidParameter("pass corrupt or corrupt_rate, not both")
    if min_uploaders is None:
        min_uploaders = default_min_uploaders(parties, threshold, corrupt)
    return DecryptionPolicy(parties=parties, threshold=threshold, corrupt=corrupt,
                            min_uploaders=min_uploaders)


def roster_corrupt(corrupt_rate: float, parties: int) -> int:
    """The roster policy's worst-case corrupt count for ``parties`` (as in masking mode)."""
    return math.ceil(corrupt_rate * parties)
