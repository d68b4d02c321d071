"""The privacy ledger: an enterprise's append-only, hash-chained record of every round's DP-SGD spend.

File format ``secagg-privacy-ledger/2``: JSON Lines that the writer only ever appends to
(``O_APPEND``, one ``write`` and an ``fsync`` per round; ``chattr +a`` can make the file
append-only at the file-system level too).

* Line 1, the header: enterprise, budget epsilon, delta, accountant, creation time (UTC).
* Per round, an *entry* line and a *head* line, written together. The entry holds ``prev``, the
  SHA-256 of the record before it (the header for the first entry), and the round's server round
  id, protection mode, sample rate, noise multiplier, steps, clip norm, delta, accountant and its
  version (Opacus's), the model's layout digest, a UTC ISO 8601 time stamp, its epsilon by RDP and
  PRV, and the total as composed when it was written. The head holds the number of entries and the
  SHA-256 of the last; when the enterprise signs its ledger (``identity=``), also an Ed25519
  signature of both by its identity key (:class:`secagg.identity.Identity`).
* Hashes are SHA-256 (:mod:`hashlib`) of the canonical JSON encoding (sorted keys, no whitespace,
  ASCII), after a domain label.

Entries carry time stamps, so two runs no longer give byte-identical files.

What the chain shows, and what it cannot (no external anchor):

* an edited entry, two entries swapped, or an entry removed from the middle breaks the chain and
  is reported naming the first bad entry; so does removing trailing entries without their heads;
* cutting the file back to an earlier head (whole entry+head pairs) leaves a well-formed shorter
  ledger. Nothing inside the file can tell, signed or not: each earlier head was validly signed,
  and the enterprise holds its key. Only an anchor kept outside the file catches it -- a head hash
  an auditor recorded earlier (:meth:`PrivacyLedger.verify` ``anchor=``), or the server's record of
  the rounds this enterprise took part in (each entry names its server round id);
* someone without the key can rewrite the whole chain consistently; a signature (checked against
  the key pinned in the federation's roster) shows the head came from the enterprise's key;
* no signature shows that the entries are true: the enterprise writes them.

Totals are never read from the file: :meth:`PrivacyLedger.spent` and every entry's
``total_epsilon`` compose the recorded mechanisms in the ledger's accountant (Opacus); the total as
written is kept as ``written_total_epsilon`` and trusted for nothing. :meth:`PrivacyLedger.check`
refuses a round that would take the total past the budget, *before* any training; a round is
charged once per server round id. Format ``secagg-privacy-ledger/1`` (one JSON document, no chain)
is refused with a message: its totals were trusted as written, so it is not evidence, and
migrating it would chain unverified history as if it were. One writer per ledger file. The
enterprise client (``secagg_clients``) keeps it; it lives in the library so that
``secagg privacy ledger`` reads it without the client side.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secagg.dp import Accountant, GaussianSteps, epsilon_of_history
from secagg.dp.accounting import check_delta
from secagg.dp.ledger_format import (
    CLIENT_LEVEL_ACCOUNTANT,
    FORMAT,
    OLD_FORMAT,
    BudgetExceeded,
    ChainStatus,
    ClientLevelEntry,
    LedgerEntry,
    LedgerTampered,
    ProtectionMode,
    _canonical,
    _client_record,
    _fingerprint,
    _hash,
    _head_message,
    _now,
    _opacus_version,
    _record,
    _scan,
)
from secagg.errors import AuthenticationFailed, InvalidParameter

if TYPE_CHECKING:
    from secagg.dp.distributed import DistributedNoise
    from secagg.identity import Identity, Roster


__all__ = ["FORMAT", "OLD_FORMAT", "BudgetExceeded", "ChainStatus", "ClientLevelEntry",
           "LedgerEntry", "LedgerTampered", "PrivacyLedger", "ProtectionMode"]


class PrivacyLedger:
    """An enterprise's budget (epsilon at ``delta`` under ``accountant``) and its spent rounds."""

    def __init__(self, path: Path, *, enterprise: str, budget_epsilon: float, delta: float,
                 accountant: Accountant, entries: list[LedgerEntry],
                 status: ChainStatus | None = None, identity: Identity | None = None,
                 size: int = 0, last_hash: str = "",
                 client_entries: list[ClientLevelEntry] | None = None) -> None:
        self.path = path
        self.enterprise = enterprise
        self.budget_epsilon = budget_epsilon
        self.delta = delta
        self.accountant = accountant
        self.status = status or ChainStatus(entries=len(entries))
        self._identity = identity
        self._size, self._last = size, last_hash
        self._entries = self._with_totals(entries)
        self._client_entries = self._with_client_totals(list(client_entries or []))
        self._count = max([e.round for e in self._entries] +
                          [e.round for e in self._client_entries], default=0)

    @classmethod
    def open(cls, path: str | Path, *, enterprise: str, budget_epsilon: float, delta: float,
             accountant: Accountant | str = Accountant.RDP,
             identity: Identity | None = None) -> PrivacyLedger:
        """Open the ledger at ``path`` for spending, creating it if absent; its stored terms must
        match, and its chain must verify. With ``identity``, every head written is signed by it
        (a ledger signed before must be opened with the same identity)."""
        if not (math.isfinite(budget_epsilon) and budget_epsilon > 0):
            raise InvalidParameter(f"budget_epsilon must be a finite number > 0, found {budget_epsilon}")
        check_delta(delta)
        acc = Accountant.parse(accountant)
        p = Path(path)
        if p.exists():
            ledger = cls.load(p)
            for field, want, have in (("enterprise", enterprise, ledger.enterprise),
                                      ("budget_epsilon", budget_epsilon, ledger.budget_epsilon),
                                      ("delta", delta, ledger.delta),
                                      ("accountant", acc, ledger.accountant)):
                if want != have:
                    raise InvalidParameter(
                        f"ledger {str(p)!r} was created with {field}={have!r}, but {want!r} was "
                        "asked; a budget cannot be changed after spending starts (use a new ledger "
                        "file only if the data set is new)"
                    )
            signer = ledger.status.signer
            if signer is not None and (identity is None or identity.public_key != signer):
                raise InvalidParameter(
                    f"ledger {str(p)!r} is signed by identity {_fingerprint(signer)}; open it with "
                    "that identity (--identity) so its next heads are signed too")
            ledger._identity = identity
            return ledger
        terms = {"format": FORMAT, "enterprise": enterprise,
                 "budget_epsilon": float(budget_epsilon), "delta": float(delta),
                 "accountant": acc.value, "created": _now()}
        ledger = cls(p, enterprise=enterprise, budget_epsilon=budget_epsilon, delta=delta,
                     accountant=acc, entries=[], identity=identity, last_hash=_hash(terms))
        ledger._create(_canonical(terms) + b"\n" + ledger._head_line(0, ledger._last))
        return ledger

    @classmethod
    def load(cls, path: str | Path, *, strict: bool = True) -> PrivacyLedger:
        """Read a ledger (for display, audit, or to continue spending).

        ``strict`` (default): raise :class:`LedgerTampered` naming the first bad entry unless the
        chain verifies. ``strict=False`` (auditors): return what could be read, with
        :attr:`status` saying where the chain breaks; totals still compose every entry read.
        """
        p = Path(path)
        scan = _scan(p)
        if strict and not scan.status.intact:
            raise LedgerTampered(p, scan.status.first_bad or None, str(scan.status.problem))
        t = scan.terms
        return cls(p, enterprise=str(t["enterprise"]), budget_epsilon=float(t["budget_epsilon"]),
                   delta=float(t["delta"]), accountant=Accountant.parse(t["accountant"]),
                   entries=scan.entries, status=scan.status, size=scan.size,
                   last_hash=scan.last_hash, client_entries=scan.client_entries)

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    @property
    def client_level_entries(self) -> tuple[ClientLevelEntry, ...]:
        """The client-level (distributed Skellam noise) entries, epsilons recomputed."""
        return tuple(self._client_entries)

    def client_level_spent(self) -> float:
        """Client-level epsilon of every recorded release composed (integer-order Skellam RDP,
        recomputed from each entry's noise parameters and actual noise shares, never read)."""
        return self._client_entries[-1].total_epsilon if self._client_entries else 0.0

    def _with_client_totals(self, entries: list[ClientLevelEntry]) -> list[ClientLevelEntry]:
        from secagg.dp.client_level import compose_client_level

        out = []
        releases = []
        for e in entries:
            release = e.release()
            releases.append(release)
            out.append(replace(e, epsilon=compose_client_level([release], delta=e.delta),
                               total_epsilon=compose_client_level(releases, delta=self.delta)))
        return out

    def record_client_level(self, noise: DistributedNoise, *, noise_shares: int,
                            server_round_id: str | None = None,
                            layout_digest: bytes | str = "",
                            mode: ProtectionMode | str = ProtectionMode.MASKING
                            ) -> ClientLevelEntry:
        """Append and durably save one released sum protected by distributed Skellam noise;
        returns the new entry (client-level epsilon of this sum alone, at the ledger's delta,
        and the composed total of every client-level entry).

        ``noise_shares``: the shares actually in the released sum (its survivors), at least
        ``noise.min_clients``. Idempotent per ``server_round_id`` like :meth:`record`. The
        client-level total is reported beside the DP-SGD budget, not charged against it: the two
        guarantees protect different units (one enterprise's examples; the enterprise)."""
        from secagg.dp.client_level import SkellamRelease, compose_client_level

        if not (isinstance(noise_shares, int) and not isinstance(noise_shares, bool)
                and noise.min_clients <= noise_shares <= noise.num_clients):
            raise InvalidParameter(
                f"noise_shares must be an integer in [min_clients={noise.min_clients}, "
                f"num_clients={noise.num_clients}], found {noise_shares!r}: a sum holding fewer "
                "shares than its noise was calibrated for must not be released")
        fp = noise.fixed_point
        new = ClientLevelEntry(
            round=self._count + 1, noise_multiplier=float(noise.noise_multiplier),
            l2_clip=float(noise.l2_clip), clip=float(fp.clip), value_bits=fp.value_bits,
            dim=noise.dim, num_clients=noise.num_clients, max_weight=noise.max_weight,
            mod_bits=noise.mod_bits, min_noise_shares=noise.min_clients,
            noise_shares=noise_shares, delta=float(self.delta), server_round_id=server_round_id,
            mode=ProtectionMode.parse(mode), share_mu=float(noise.share_mu),
            sensitivity_l1=float(noise.sensitivity_l1),
            sensitivity_l2=float(noise.sensitivity_l2), accountant=CLIENT_LEVEL_ACCOUNTANT,
            accountant_version=_opacus_version(),
            layout_digest=layout_digest.hex() if isinstance(layout_digest, bytes) else layout_digest,
            timestamp=_now(), prev=self._last)
        if server_round_id is not None:
            old = next((e for e in self._client_entries
                        if e.server_round_id == server_round_id), None)
            if old is not None:
                if old.same_mechanism(new):
                    return old
                raise InvalidParameter(
                    f"server round {server_round_id!r} is already recorded (entry {old.round}) "
                    "with another client-level mechanism; a round is recorded once")
        release = SkellamRelease.of(noise, noise_shares)
        eps = compose_client_level([release], delta=self.delta)
        total = compose_client_level([e.release() for e in self._client_entries] + [release],
                                     delta=self.delta)
        new = replace(new, written_epsilon=eps, written_total_epsilon=total)
        new = replace(new, hash=_hash(_client_record(new)), epsilon=eps, total_epsilon=total)
        self._append(_canonical(_client_record(new)) + b"\n" +
                     self._head_line(new.round, new.hash))
        self._client_entries.append(new)
        self._count = new.round
        self._last = new.hash
        self.status = replace(self.status, entries=self._count,
                              signer=None if self._identity is None else self._identity.public_key)
        return new

    def spent(self) -> float:
        """Total epsilon so far: all rounds' mechanisms composed in the ledger's accountant (the
        last entry's total, composed when the entry was loaded or recorded, never read)."""
        return self._entries[-1].total_epsilon if self._entries else 0.0

    def remaining(self) -> float:
        return max(0.0, self.budget_epsilon - self.spent())

    def entry_for(self, server_round_id: str) -> LedgerEntry | None:
        """The entry that charged server round ``server_round_id``, if any."""
        return next((e for e in self._entries if e.server_round_id == server_round_id), None)

    def _total(self, history: list[GaussianSteps]) -> float:
        return epsilon_of_history(history, delta=self.delta, accountant=self.accountant)

    def _with_totals(self, entries: list[LedgerEntry]) -> list[LedgerEntry]:
        history: list[GaussianSteps] = []
        out = []
        for e in entries:
            history.append(e.gaussian_steps)
            out.append(replace(e, total_epsilon=self._total(history)))
        return out

    def check(self, planned: GaussianSteps, *, delta: float) -> float:
        """The total epsilon if ``planned`` runs; raises :class:`BudgetExceeded` past the budget."""
        if delta != self.delta:
            raise InvalidParameter(
                f"round delta={delta} differs from the ledger's delta={self.delta}; train with "
                "the ledger's delta"
            )
        total = self._total([e.gaussian_steps for e in self._entries] + [planned])
        if total > self.budget_epsilon:
            spent = self.spent()
            raise BudgetExceeded(
                f"enterprise '{self.enterprise}': spent {spent:.4g} of epsilon "
                f"{self.budget_epsilon:g} (remaining {max(0.0, self.budget_epsilon - spent):.4g}) "
                f"at delta={self.delta:g} ({self.accountant.value}); this round "
                f"(q={planned.sample_rate:.4g}, sigma={planned.noise_multiplier:.4g}, "
                f"steps={planned.steps}) would bring the total to {total:.4g} > budget "
                f"{self.budget_epsilon:g}; lower the round's "
                "target_epsilon or steps, raise its noise, or stop training"
            )
        return total

    def record(self, planned: GaussianSteps, *, delta: float, epsilon_rdp: float,
               epsilon_prv: float, server_round_id: str | None = None,
               mode: ProtectionMode | str | None = None, clip_norm: float | None = None,
               layout_digest: bytes | str = "") -> LedgerEntry:
        """Check, append and durably save one round; returns the new entry.

        Idempotent per ``server_round_id``: charging a server round already in the ledger with
        the same mechanism returns its entry and appends nothing (a retry after a crash);
        with another mechanism it is refused (a round is charged once).
        """
        new = LedgerEntry(
            sample_rate=float(planned.sample_rate),
            noise_multiplier=float(planned.noise_multiplier), steps=planned.steps,
            delta=float(delta), epsilon_rdp=float(epsilon_rdp), epsilon_prv=float(epsilon_prv),
            round=self._count + 1, total_epsilon=math.nan, server_round_id=server_round_id,
            mode=None if mode is None else ProtectionMode.parse(mode),
            clip_norm=None if clip_norm is None else float(clip_norm), accountant=self.accountant,
            accountant_version=_opacus_version(),
            layout_digest=layout_digest.hex() if isinstance(layout_digest, bytes) else layout_digest,
            timestamp=_now(), prev=self._last,
        )
        if server_round_id is not None:
            old = self.entry_for(server_round_id)
            if old is not None:
                if old.same_mechanism(new):
                    return old
                raise InvalidParameter(
                    f"server round {server_round_id!r} is already charged (entry {old.round}) "
                    "with another mechanism; a round is charged once")
        total = self.check(planned, delta=delta)
        new = replace(new, written_total_epsilon=float(total))
        new = replace(new, hash=_hash(_record(new)), total_epsilon=total)
        self._append(_canonical(_record(new)) + b"\n" + self._head_line(new.round, new.hash))
        self._entries.append(new)
        self._count = new.round
        self._last = new.hash
        self.status = replace(self.status, entries=self._count,
                              signer=None if self._identity is None else self._identity.public_key)
        return new

    def verify(self, *, public_key: bytes | None = None, roster: Roster | None = None,
               anchor: str | None = None) -> None:
        """Raise unless the ledger is evidence: :class:`LedgerTampered` if the chain is broken
        or ``anchor`` (a head or entry hash recorded earlier, outside the file) is not in it
        (cut back past it); :class:`AuthenticationFailed` unless its last head is signed by
        ``public_key``, or by the roster member named like the ledger's enterprise."""
        if not self.status.intact:
            raise LedgerTampered(self.path, self.status.first_bad or None, str(self.status.problem))
        if anchor is not None and anchor != self._last and \
                anchor not in {e.hash for e in self._entries} | \
                {e.hash for e in self._client_entries}:
            raise LedgerTampered(self.path, self._count + 1,
                                 f"the anchored hash {anchor[:16]}... is not in the chain: the "
                                 "ledger was cut back past it, or the anchor is another ledger's")
        if roster is not None:
            try:
                public_key = next(m.public_key for m in roster.members if m.name == self.enterprise)
            except StopIteration:
                raise InvalidParameter(f"roster {roster.federation!r} has no member named "
                                       f"{self.enterprise!r} (the ledger's enterprise)") from None
        if public_key is None:
            return
        if self.status.signer is None:
            raise AuthenticationFailed(f"ledger {str(self.path)!r} (its last head is unsigned)")
        if self.status.signer != public_key:
            raise AuthenticationFailed(f"ledger {str(self.path)!r} (signed by another identity, "
                                       f"{_fingerprint(self.status.signer)})")
        # the scan verified the last head's signature under the key it names, now pinned

    def to_dict(self) -> dict[str, Any]:
        """Terms, entries (with recomputed totals), recomputed spend and chain status."""
        spent = self.spent()
        return {
            "format": FORMAT, "enterprise": self.enterprise, "budget_epsilon": self.budget_epsilon,
            "delta": self.delta, "accountant": self.accountant.value,
            "rounds": [e.to_dict() for e in self._entries],
            "spent": spent, "remaining": max(0.0, self.budget_epsilon - spent),
            "chain": {"intact": self.status.intact, "first_bad": self.status.first_bad,
                      "problem": self.status.problem, "head": self._last,
                      "signer": None if self.status.signer is None else self.status.signer.hex()},
            # only when recorded, so a ledger without it shows what it always showed
            **({"client_level": {
                "accountant": CLIENT_LEVEL_ACCOUNTANT, "delta": self.delta,
                "rounds": [e.to_dict() for e in self._client_entries],
                "spent": self.client_level_spent()}} if self._client_entries else {}),
        }

    # ---- writing ------------------------------------------------------------------------------

    def _head_line(self, count: int, last: str) -> bytes:
        key = sig = None
        if self._identity is not None:
            key = self._identity.public_key.hex()
            sig = self._identity.signing_key.sign(_head_message(count, last)).hex()
        return _canonical({"kind": "head", "count": count, "hash": last, "public_key": key,
                           "signature": sig}) + b"\n"

    def _create(self, data: bytes) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise InvalidParameter(f"ledger {str(self.path)!r} cannot be created: "
                                   f"{exc.strerror or exc}; pass a writable path") from None
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        self._size = len(data)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _append(self, data: bytes) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise InvalidParameter(f"ledger {str(self.path)!r} cannot be written: "
                                   f"{exc.strerror or exc}") from None
        try:
            if os.fstat(fd).st_size != self._size:
                raise InvalidParameter(
                    f"ledger {str(self.path)!r} changed on disk since it was read (another writer, "
                    "or an edit); reopen it -- one writer per ledger")
            _write_all(fd, data)
        finally:
            os.close(fd)
        self._size += len(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)
