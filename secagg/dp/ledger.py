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

import enum
import hashlib
import importlib.metadata
import json
import math
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secagg.dp import Accountant, GaussianSteps, PrivacySpend, epsilon_of_history
from secagg.dp.accounting import check_delta
from secagg.errors import AuthenticationFailed, InvalidParameter, SecAggError
from secagg.hazmat.signing import verify_signature

if TYPE_CHECKING:
    from secagg.identity import Identity, Roster

__all__ = ["BudgetExceeded", "ChainStatus", "LedgerEntry", "LedgerTampered", "PrivacyLedger",
           "ProtectionMode"]

FORMAT = "secagg-privacy-ledger/2"
OLD_FORMAT = "secagg-privacy-ledger/1"
_HEADER = ("format", "enterprise", "budget_epsilon", "delta", "accountant", "created")
_ENTRY = ("kind", "round", "prev", "server_round_id", "mode", "sample_rate", "noise_multiplier",
          "steps", "clip_norm", "delta", "accountant", "accountant_version", "layout_digest",
          "timestamp", "epsilon_rdp", "epsilon_prv", "total_epsilon")
_HEAD = ("kind", "count", "hash", "public_key", "signature")


class BudgetExceeded(SecAggError):
    """Training this round would spend more than the enterprise's privacy budget."""


class LedgerTampered(SecAggError):
    """The ledger's chain does not verify: ``entry`` (1-based; None for the header) is the first
    bad one and ``problem`` says what is wrong with it."""

    def __init__(self, path: Path, entry: int | None, problem: str) -> None:
        where = "its header" if entry is None else f"entry {entry}"
        super().__init__(f"ledger {str(path)!r} fails verification at {where}: {problem}")
        self.entry, self.problem = entry, problem


class ProtectionMode(enum.Enum):
    """How the round protected the update it released (the server's round mode)."""

    MASKING = "masking"
    CKKS = "ckks"
    PLAIN = "plain"

    @classmethod
    def parse(cls, value: str | ProtectionMode) -> ProtectionMode:
        if isinstance(value, ProtectionMode):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InvalidParameter(f"protection mode must be one of {[m.value for m in cls]}, "
                                   f"found {value!r}") from None


@dataclass(frozen=True, slots=True)
class LedgerEntry(PrivacySpend):
    """One recorded round: what it spent, its number, and the composed total after it.

    ``total_epsilon`` is recomputed from the mechanisms of this and every earlier entry when the
    ledger is read; ``written_total_epsilon`` is what the file says, and is trusted for nothing.
    ``hash`` is this entry's SHA-256 (what the next entry's ``prev`` must hold).
    """

    round: int
    total_epsilon: float
    server_round_id: str | None = None
    mode: ProtectionMode | None = None
    clip_norm: float | None = None
    accountant: Accountant = Accountant.RDP
    accountant_version: str = ""
    layout_digest: str = ""
    timestamp: str = ""
    prev: str = ""
    hash: str = ""
    written_total_epsilon: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """The entry as the file holds it (plus its hash; the total as recomputed)."""
        return {"round": self.round, **_record(self), "hash": self.hash,
                "total_epsilon": self.total_epsilon}

    def same_mechanism(self, other: LedgerEntry) -> bool:
        keys = ("sample_rate", "noise_multiplier", "steps", "delta", "clip_norm", "mode",
                "layout_digest")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


@dataclass(frozen=True, slots=True)
class ChainStatus:
    """What verifying the chain found: ``entries`` read, the first bad one (1-based; 0 for the
    header) and why, and the public key the last head names (None: unsigned)."""

    entries: int
    first_bad: int | None = None
    problem: str | None = None
    signer: bytes | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        if self.problem is not None:
            where = "the header" if self.first_bad == 0 else f"entry {self.first_bad}"
            return f"BROKEN at {where}: {self.problem}"
        signed = "unsigned" if self.signer is None else \
            f"signed by identity {_fingerprint(self.signer)} (verify with --roster or --public-key)"
        return f"intact: {self.entries} entries chained, head matches; {signed}"


def _fingerprint(key: bytes) -> str:
    from secagg.identity import fingerprint

    return fingerprint(key)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def _hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(FORMAT.encode() + b"\x00" + _canonical(record)).hexdigest()


def _head_message(count: int, last: str) -> bytes:
    return _canonical({"context": FORMAT + " head", "count": count, "hash": last})


def _record(e: LedgerEntry) -> dict[str, Any]:
    """The entry line's fields, as hashed."""
    return {"kind": "entry", "round": e.round, "prev": e.prev,
            "server_round_id": e.server_round_id, "mode": None if e.mode is None else e.mode.value,
            "sample_rate": e.sample_rate, "noise_multiplier": e.noise_multiplier, "steps": e.steps,
            "clip_norm": e.clip_norm, "delta": e.delta, "accountant": e.accountant.value,
            "accountant_version": e.accountant_version, "layout_digest": e.layout_digest,
            "timestamp": e.timestamp, "epsilon_rdp": e.epsilon_rdp, "epsilon_prv": e.epsilon_prv,
            "total_epsilon": e.written_total_epsilon}


def _number(raw: dict[str, Any], name: str, *, optional: bool = False) -> float | None:
    v = raw[name]
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"'{name}' must be a finite number, found {v!r}")
    return float(v)


def _text(raw: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    v = raw[name]
    if (v is None and optional) or isinstance(v, str):
        return v
    raise ValueError(f"'{name}' must be a string, found {v!r}")


def _parse_entry(raw: Any) -> LedgerEntry:
    """An entry line, checked field by field (raises ValueError naming the field)."""
    if not isinstance(raw, dict) or raw.get("kind") != "entry":
        raise ValueError("expected an entry record")
    if sorted(raw) != sorted(_ENTRY):
        raise ValueError(f"expected exactly the fields {sorted(_ENTRY)}, found {sorted(raw)}")
    for name in ("round", "steps"):
        if type(raw[name]) is not int:
            raise ValueError(f"'{name}' must be an integer, found {raw[name]!r}")
    mode = _text(raw, "mode", optional=True)
    try:
        entry = LedgerEntry(
            sample_rate=_number(raw, "sample_rate"),  # type: ignore[arg-type]
            noise_multiplier=_number(raw, "noise_multiplier"),  # type: ignore[arg-type]
            steps=raw["steps"], delta=_number(raw, "delta"),  # type: ignore[arg-type]
            epsilon_rdp=_number(raw, "epsilon_rdp"),  # type: ignore[arg-type]
            epsilon_prv=_number(raw, "epsilon_prv"),  # type: ignore[arg-type]
            round=raw["round"], total_epsilon=math.nan,
            server_round_id=_text(raw, "server_round_id", optional=True),
            mode=None if mode is None else ProtectionMode.parse(mode),
            clip_norm=_number(raw, "clip_norm", optional=True),
            accountant=Accountant.parse(str(raw["accountant"])),
            accountant_version=_text(raw, "accountant_version") or "",
            layout_digest=_text(raw, "layout_digest") or "", timestamp=_text(raw, "timestamp") or "",
            prev=_text(raw, "prev") or "",
            written_total_epsilon=_number(raw, "total_epsilon"),  # type: ignore[arg-type]
        )
        check_delta(entry.delta)
        entry.gaussian_steps  # noqa: B018 -- validates sample_rate, noise_multiplier, steps
    except InvalidParameter as exc:
        raise ValueError(str(exc)) from None
    return replace(entry, hash=_hash(_record(entry)))


def _opacus_version() -> str:
    try:
        return "opacus " + importlib.metadata.version("opacus")
    except importlib.metadata.PackageNotFoundError:
        return "opacus (version unknown)"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class _Scan:
    """What reading a ledger file found (terms, entries as written, chain status, size)."""

    terms: dict[str, Any]
    entries: list[LedgerEntry]
    status: ChainStatus
    size: int
    last_hash: str


def _old_format(p: Path) -> InvalidParameter:
    return InvalidParameter(
        f"ledger {str(p)!r} is format {OLD_FORMAT!r} (one JSON document whose totals were trusted "
        f"as written, no hash chain); this version reads only {FORMAT!r} and refuses the old one "
        "rather than migrate unverifiable history into a chain. Its rounds still count against "
        "this data set's budget: keep the file as their record, and start a new ledger only with "
        "a budget that subtracts what the old one spent"
    )


def _terms(p: Path, header: Any) -> dict[str, Any]:
    if not isinstance(header, dict) or header.get("format") not in (FORMAT, OLD_FORMAT):
        raise InvalidParameter(f"{str(p)!r} is not a privacy ledger (format {FORMAT!r})")
    if header["format"] == OLD_FORMAT:
        raise _old_format(p)
    if sorted(header) != sorted(_HEADER):
        raise InvalidParameter(f"ledger {str(p)!r} has a malformed header: expected the fields "
                               f"{sorted(_HEADER)}, found {sorted(header)}")
    budget, delta = header["budget_epsilon"], header["delta"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (budget, delta)):
        raise InvalidParameter(f"ledger {str(p)!r}: budget_epsilon and delta must be numbers")
    Accountant.parse(header["accountant"])
    return header


def _scan(p: Path) -> _Scan:
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InvalidParameter(f"ledger file {str(p)!r} does not exist") from None
    except OSError as exc:
        raise InvalidParameter(f"ledger file {str(p)!r} cannot be read: {exc}") from None
    lines = data.split(b"\n")
    torn = lines[-1] != b""
    if not torn:
        lines.pop()
    try:
        header = json.loads(lines[0])
    except (ValueError, IndexError):
        try:
            header = json.loads(data)  # format /1 is one indented JSON document
        except ValueError as exc:
            raise InvalidParameter(f"ledger file {str(p)!r} is not valid JSON Lines: "
                                   f"{exc}") from None
    terms = _terms(p, header)
    last, count = _hash(terms), 0
    entries: list[LedgerEntry] = []
    problem: tuple[int, str] | None = None
    signer: bytes | None = None
    expect_head = True  # the header is followed by the head of the empty ledger

    def fail(entry: int, why: str) -> None:
        nonlocal problem
        if problem is None:
            problem = (entry, why)

    for lineno, line in enumerate(lines[1:], start=2):
        if torn and lineno == len(lines):
            fail(count + 1 if not expect_head else count,
                 f"line {lineno} is incomplete (a crash during an append?); the round it was "
                 "charging sent nothing before the charge was durable, so the line can be "
                 "removed by hand after inspection")
            break
        try:
            rec = json.loads(line)
        except ValueError:
            fail(count + 1, f"line {lineno} is not JSON")
            continue
        kind = rec.get("kind") if isinstance(rec, dict) else None
        if kind == "head":
            if not expect_head:
                fail(count, f"line {lineno} is a second head after entry {count}")
            expect_head = False
            if not isinstance(rec, dict) or sorted(rec) != sorted(_HEAD):
                fail(count, f"line {lineno}: malformed head record")
                continue
            if rec["count"] != count or rec["hash"] != last:
                what = "the header" if count == 0 else f"entry {count}"
                fail(count, f"{what} does not match the head written with it (line {lineno}): "
                     "it was edited, or entries were reordered, removed or inserted")
            if rec["public_key"] is None and rec["signature"] is None:
                signer = None
                continue
            try:
                signer = bytes.fromhex(rec["public_key"])
                verify_signature(signer, bytes.fromhex(rec["signature"]),
                                 _head_message(rec["count"], rec["hash"]), what="ledger head")
            except (TypeError, ValueError, InvalidParameter, AuthenticationFailed):
                fail(count, f"the head after it (line {lineno}) carries a signature that does "
                     "not verify under the key it names")
            continue
        if expect_head:
            fail(count, f"{'the header' if count == 0 else f'entry {count}'} has no head after "
                 "it: a record was removed or a write was interrupted")
        expect_head = True
        count += 1
        try:
            entry = _parse_entry(rec)
        except ValueError as exc:
            fail(count, f"line {lineno}: {exc}")
            continue
        if entry.round != count:
            fail(count, f"position {count} holds round {entry.round}: entries were reordered, "
                 "removed or inserted")
        elif entry.prev != last:
            before = "the header" if count == 1 else f"entry {count - 1}"
            fail(count, f"its prev hash does not match {before} as it stands: {before} was "
                 f"edited together with its head, or entry {count} was")
        entries.append(entry)
        last = entry.hash
    if problem is None and expect_head:
        fail(count, f"{'the header' if count == 0 else f'entry {count}'} has no head after it: "
             "the file was cut after it or a write was torn")
    status = ChainStatus(entries=len(entries), signer=signer) if problem is None else \
        ChainStatus(entries=len(entries), first_bad=problem[0], problem=problem[1], signer=signer)
    return _Scan(terms, entries, status, len(data), last)


class PrivacyLedger:
    """An enterprise's budget (epsilon at ``delta`` under ``accountant``) and its spent rounds."""

    def __init__(self, path: Path, *, enterprise: str, budget_epsilon: float, delta: float,
                 accountant: Accountant, entries: list[LedgerEntry],
                 status: ChainStatus | None = None, identity: Identity | None = None,
                 size: int = 0, last_hash: str = "") -> None:
        self.path = path
        self.enterprise = enterprise
        self.budget_epsilon = budget_epsilon
        self.delta = delta
        self.accountant = accountant
        self.status = status or ChainStatus(entries=len(entries))
        self._identity = identity
        self._size, self._last = size, last_hash
        self._entries = self._with_totals(entries)

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
                   last_hash=scan.last_hash)

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    def spent(self) -> float:
        """Total epsilon so far: all rounds' mechanisms composed in the ledger's accountant."""
        return self._total([e.gaussian_steps for e in self._entries])

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
            round=len(self._entries) + 1, total_epsilon=math.nan, server_round_id=server_round_id,
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
        self._last = new.hash
        self.status = replace(self.status, entries=len(self._entries),
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
                anchor not in {e.hash for e in self._entries}:
            raise LedgerTampered(self.path, len(self._entries) + 1,
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
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
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
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
