"""The privacy ledger's file format: its records, their hashes, and the scan that checks the chain.

See :mod:`secagg.dp.ledger` for the format and what the chain shows; this module reads and
checks it, :class:`secagg.dp.ledger.PrivacyLedger` writes it and composes its totals.
"""

from __future__ import annotations

import enum
import hashlib
import importlib.metadata
import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secagg.dp import Accountant, PrivacySpend
from secagg.dp.accounting import check_delta, parse_choice
from secagg.errors import AuthenticationFailed, InvalidParameter, SecAggError
from secagg.hazmat.signing import verify_signature

if TYPE_CHECKING:
    pass

__all__ = ["CLIENT_LEVEL_ACCOUNTANT", "FORMAT", "OLD_FORMAT", "BudgetExceeded", "ChainStatus",
           "ClientLevelEntry", "LedgerEntry", "LedgerTampered", "ProtectionMode"]

FORMAT = "secagg-privacy-ledger/2"
OLD_FORMAT = "secagg-privacy-ledger/1"
_HEADER = ("format", "enterprise", "budget_epsilon", "delta", "accountant", "created")
_ENTRY = ("kind", "round", "prev", "server_round_id", "mode", "sample_rate", "noise_multiplier",
          "steps", "clip_norm", "delta", "accountant", "accountant_version", "layout_digest",
          "timestamp", "epsilon_rdp", "epsilon_prv", "total_epsilon")
_HEAD = ("kind", "count", "hash", "public_key", "signature")
#: a client-level record (kind "client-level"): one released sum with distributed Skellam noise
_CLIENT = ("kind", "round", "prev", "server_round_id", "mode", "mechanism", "noise_multiplier",
           "l2_clip", "clip", "value_bits", "dim", "num_clients", "max_weight", "mod_bits",
           "min_noise_shares", "noise_shares", "share_mu", "sensitivity_l1", "sensitivity_l2",
           "delta", "accountant", "accountant_version", "layout_digest", "timestamp", "epsilon",
           "total_client_epsilon")
#: how client-level entries are composed (secagg.dp.client_level)
CLIENT_LEVEL_ACCOUNTANT = "skellam-rdp-integer-orders"


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
    CKKS_THRESHOLD = "ckks-threshold"
    PLAIN = "plain"

    @classmethod
    def parse(cls, value: str | ProtectionMode) -> ProtectionMode:
        return parse_choice(cls, value, "protection mode")


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
class ClientLevelEntry:
    """One released sum protected by distributed Skellam noise (client-level DP).

    The round's noise parameters (all that :class:`secagg.dp.distributed.DistributedNoise` is
    built from), the noise shares the released sum actually held (``noise_shares``: one per
    survivor, never fewer than ``min_noise_shares``, the masking threshold the noise was
    calibrated for) and the client-level epsilon of this sum alone at ``delta``. ``epsilon`` and
    ``total_epsilon`` (every client-level entry up to this one composed) are recomputed from the
    parameters when the ledger is read; ``written_*`` are what the file says, trusted for
    nothing. ``round`` is the position in the chain (shared with the DP-SGD entries).
    """

    round: int
    noise_multiplier: float
    l2_clip: float
    clip: float
    value_bits: int
    dim: int
    num_clients: int
    max_weight: int
    mod_bits: int
    min_noise_shares: int
    noise_shares: int
    delta: float
    epsilon: float = math.nan
    total_epsilon: float = math.nan
    server_round_id: str | None = None
    mode: ProtectionMode = ProtectionMode.MASKING
    mechanism: str = "skellam"
    share_mu: float = math.nan
    sensitivity_l1: float = math.nan
    sensitivity_l2: float = math.nan
    accountant: str = CLIENT_LEVEL_ACCOUNTANT
    accountant_version: str = ""
    layout_digest: str = ""
    timestamp: str = ""
    prev: str = ""
    hash: str = ""
    written_epsilon: float = math.nan
    written_total_epsilon: float = math.nan

    def noise(self) -> Any:
        """The round's :class:`secagg.dp.distributed.DistributedNoise` (validated)."""
        import warnings

        from secagg.dp.distributed import DistributedNoise
        from secagg.encoding import FixedPoint

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a rounding-dominated round warned when it ran
            return DistributedNoise(
                fixed_point=FixedPoint(clip=self.clip, value_bits=self.value_bits),
                l2_clip=self.l2_clip, dim=self.dim, num_clients=self.num_clients,
                min_clients=self.min_noise_shares, noise_multiplier=self.noise_multiplier,
                mod_bits=self.mod_bits, max_weight=self.max_weight)

    def release(self) -> Any:
        """This entry's :class:`secagg.dp.client_level.SkellamRelease` (the actual shares)."""
        from secagg.dp.client_level import SkellamRelease

        return SkellamRelease.of(self.noise(), self.noise_shares)

    def to_dict(self) -> dict[str, Any]:
        """The entry as the file holds it (plus its hash; epsilons as recomputed)."""
        return {**_client_record(self), "hash": self.hash, "epsilon": self.epsilon,
                "total_client_epsilon": self.total_epsilon}

    def same_mechanism(self, other: ClientLevelEntry) -> bool:
        keys = ("noise_multiplier", "l2_clip", "clip", "value_bits", "dim", "num_clients",
                "max_weight", "mod_bits", "min_noise_shares", "noise_shares", "delta",
                "layout_digest", "mode", "mechanism")
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


def _client_record(e: ClientLevelEntry) -> dict[str, Any]:
    """A client-level line's fields, as hashed."""
    return {"kind": "client-level", "round": e.round, "prev": e.prev,
            "server_round_id": e.server_round_id, "mode": e.mode.value, "mechanism": e.mechanism,
            "noise_multiplier": e.noise_multiplier, "l2_clip": e.l2_clip, "clip": e.clip,
            "value_bits": e.value_bits, "dim": e.dim, "num_clients": e.num_clients,
            "max_weight": e.max_weight, "mod_bits": e.mod_bits,
            "min_noise_shares": e.min_noise_shares, "noise_shares": e.noise_shares,
            "share_mu": e.share_mu, "sensitivity_l1": e.sensitivity_l1,
            "sensitivity_l2": e.sensitivity_l2, "delta": e.delta, "accountant": e.accountant,
            "accountant_version": e.accountant_version, "layout_digest": e.layout_digest,
            "timestamp": e.timestamp, "epsilon": e.written_epsilon,
            "total_client_epsilon": e.written_total_epsilon}


def _parse_client_entry(raw: Any) -> ClientLevelEntry:
    """A client-level line, checked field by field and against the parameters it derives from
    (raises ValueError naming the field)."""
    if sorted(raw) != sorted(_CLIENT):
        raise ValueError(f"expected exactly the fields {sorted(_CLIENT)}, found {sorted(raw)}")
    ints = ("round", "value_bits", "dim", "num_clients", "max_weight", "mod_bits",
            "min_noise_shares", "noise_shares")
    for name in ints:
        if type(raw[name]) is not int:
            raise ValueError(f"'{name}' must be an integer, found {raw[name]!r}")
    if raw["mechanism"] != "skellam":
        raise ValueError(f"'mechanism' {raw['mechanism']!r} is not one this version composes "
                         "(skellam)")
    if raw["accountant"] != CLIENT_LEVEL_ACCOUNTANT:
        raise ValueError(f"'accountant' must be {CLIENT_LEVEL_ACCOUNTANT!r}, found "
                         f"{raw['accountant']!r}")
    nums = {k: _number(raw, k) for k in ("noise_multiplier", "l2_clip", "clip", "share_mu",
                                           "sensitivity_l1", "sensitivity_l2", "delta",
                                           "epsilon", "total_client_epsilon")}
    try:
        entry = ClientLevelEntry(
            **{k: raw[k] for k in ints},
            noise_multiplier=nums["noise_multiplier"], l2_clip=nums["l2_clip"],  # type: ignore[arg-type]
            clip=nums["clip"], delta=nums["delta"],  # type: ignore[arg-type]
            server_round_id=_text(raw, "server_round_id", optional=True),
            mode=ProtectionMode.parse(str(_text(raw, "mode"))), mechanism="skellam",
            share_mu=nums["share_mu"], sensitivity_l1=nums["sensitivity_l1"],  # type: ignore[arg-type]
            sensitivity_l2=nums["sensitivity_l2"],  # type: ignore[arg-type]
            accountant_version=_text(raw, "accountant_version") or "",
            layout_digest=_text(raw, "layout_digest") or "",
            timestamp=_text(raw, "timestamp") or "", prev=_text(raw, "prev") or "",
            written_epsilon=nums["epsilon"],  # type: ignore[arg-type]
            written_total_epsilon=nums["total_client_epsilon"],  # type: ignore[arg-type]
        )
        check_delta(entry.delta)
        noise = entry.noise()
    except InvalidParameter as exc:
        raise ValueError(str(exc)) from None
    if not noise.min_clients <= entry.noise_shares <= noise.num_clients:
        raise ValueError(f"'noise_shares' {entry.noise_shares} is outside [min_noise_shares="
                         f"{noise.min_clients}, num_clients={noise.num_clients}]: a sum of fewer "
                         "shares than the noise was calibrated for is never released")
    for name, want in (("share_mu", noise.share_mu), ("sensitivity_l1", noise.sensitivity_l1),
                       ("sensitivity_l2", noise.sensitivity_l2)):
        if not math.isclose(getattr(entry, name), want, rel_tol=1e-9):
            raise ValueError(f"'{name}' {getattr(entry, name)!r} does not follow from the "
                             f"entry's noise parameters ({want!r})")
    return replace(entry, hash=_hash(_client_record(entry)))


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
    client_entries: list[ClientLevelEntry]
    count: int  # records chained (DP-SGD and client-level entries)


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
    client_entries: list[ClientLevelEntry] = []
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
        entry: LedgerEntry | ClientLevelEntry
        try:
            entry = _parse_client_entry(rec) if kind == "client-level" else _parse_entry(rec)
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
        if isinstance(entry, ClientLevelEntry):
            client_entries.append(entry)
        else:
            entries.append(entry)
        last = entry.hash
    if problem is None and expect_head:
        fail(count, f"{'the header' if count == 0 else f'entry {count}'} has no head after it: "
             "the file was cut after it or a write was torn")
    read = len(entries) + len(client_entries)
    status = ChainStatus(entries=read, signer=signer) if problem is None else \
        ChainStatus(entries=read, first_bad=problem[0], problem=problem[1], signer=signer)
    return _Scan(terms, entries, status, len(data), last, client_entries, count)


