"""Long-term enterprise identities and the federation's pinned roster.

Every enterprise creates an Ed25519 identity on its own machine (:meth:`Identity.create`, a file
readable by its owner only). The federation's :class:`Roster` lists each member's client id, name
and identity public key; the enterprises assemble it and exchange it *outside* the aggregation
server (e-mail, a shared repository, a signed ticket) and each one pins it. Everything a client
relies on from a peer -- key adverts, consistency signatures, CKKS key boxes and upload sketches --
is verified against the pinned roster, so a server cannot add, drop or substitute a member: it never
holds a private identity key and the roster's digest is bound into every round's config.

Compare fingerprints (:attr:`RosterMember.fingerprint`) over a second channel when you exchange the
roster, as you would an SSH host key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from secagg.errors import AuthenticationFailed, InvalidParameter
from secagg.hazmat.signing import (
    SigningKey,
    export_private_bytes_for_storage,
    signing_key_from_private_bytes,
    verify_signature,
)

__all__ = ["Identity", "Roster", "RosterMember", "fingerprint"]

IDENTITY_FORMAT = "secagg-identity"
ROSTER_FORMAT = "secagg-roster"
_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def fingerprint(public_key: bytes) -> str:
    """A short, human-comparable fingerprint: 16 bytes of SHA-256, in groups of four hex digits."""
    h = hashlib.sha256(b"secagg-identity-fingerprint" + public_key).hexdigest()[:32]
    return ":".join(h[i : i + 4] for i in range(0, 32, 4))


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidParameter(f"{what} must be 1-64 characters of letters, digits, '_', '.', '-' "
                               f"starting with a letter or digit; found {name!r}")
    return name


class Identity:
    """An enterprise's long-term signing identity (private). Redacted; never leaves its file."""

    __slots__ = ("name", "signing_key")

    def __init__(self, name: str, signing_key: SigningKey) -> None:
        self.name = _check_name(name, "identity name")
        self.signing_key = signing_key

    @property
    def public_key(self) -> bytes:
        return self.signing_key.public_bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    @classmethod
    def generate(cls, name: str) -> Identity:
        """A fresh identity in memory (tests, simulations); :meth:`create` writes one to disk."""
        return cls(name, SigningKey.generate())

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, name: str) -> Identity:
        """Create a new identity file (mode 0600, refused if the file exists) and return it."""
        identity = cls.generate(name)
        p = Path(path)
        if not p.parent.is_dir():
            raise InvalidParameter(f"cannot create identity {p}: directory {p.parent} does not exist")
        body = json.dumps({
            "format": IDENTITY_FORMAT, "version": _VERSION, "name": identity.name,
            "public_key": identity.public_key.hex(),
            "private_key": export_private_bytes_for_storage(identity.signing_key).hex(),
        }, indent=2).encode() + b"\n"
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise InvalidParameter(f"identity file {p} already exists; an identity is created "
                                   "once (delete it only if you mean to leave the federation)") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        return identity

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Read an identity file; refuses one that others can read (like ssh does)."""
        p = Path(path)
        try:
            mode = p.stat().st_mode
            raw = p.read_bytes()
        except FileNotFoundError:
            raise InvalidParameter(f"identity file {p} does not exist; create one with "
                                   "`secagg-client identity create --out PATH --name NAME`") from None
        except OSError as exc:
            raise InvalidParameter(f"cannot read identity file {p}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidParameter(f"identity file {p} is accessible by group or others "
                                   f"(mode {stat.S_IMODE(mode):o}); run `chmod 600 {p}`")
        try:
            data = json.loads(raw)
            if data.get("format") != IDENTITY_FORMAT or data.get("version") != _VERSION:
                raise ValueError
            key = signing_key_from_private_bytes(bytes.fromhex(data["private_key"]))
            name = data["name"]
            public = bytes.fromhex(data["public_key"])
        except (ValueError, KeyError, TypeError, AttributeError, InvalidParameter):
            raise InvalidParameter(f"{p} is not a secagg identity file (format "
                                   f"{IDENTITY_FORMAT!r}, version {_VERSION})") from None
        if public != key.public_bytes:
            raise InvalidParameter(f"identity file {p} is corrupt: its public key does not match "
                                   "its private key")
        return cls(name, key)

    def member(self, client_id: int) -> RosterMember:
        """This identity's public roster entry under ``client_id``."""
        return RosterMember(client_id=client_id, name=self.name, public_key=self.public_key)

    def __repr__(self) -> str:
        return f"<Identity {self.name} {self.fingerprint} private=redacted>"


@dataclass(frozen=True, slots=True)
class RosterMember:
    """One pinned member: client id, name and identity public key."""

    client_id: int
    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        if isinstance(self.client_id, bool) or not isinstance(self.client_id, int) \
                or not 0 <= self.client_id < 2**32:
            raise InvalidParameter(f"roster client_id must be an integer in [0, 2^32), found "
                                   f"{self.client_id!r}")
        _check_name(self.name, f"roster name of client {self.client_id}")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != 32:
            raise InvalidParameter(f"roster public key of client {self.client_id} must be 32 "
                                   "bytes (Ed25519)")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


@dataclass(frozen=True, slots=True)
class Roster:
    """The federation's members, pinned by every enterprise. Its digest binds every round.

    The roster also pins the federation's security policy for masking rounds: the fraction of
    enterprises that may collude with the server (``corrupt_rate``) and the security target
    (``security_bits``). A client refuses a round whose neighbour graph and threshold are weaker
    than that policy, whatever the server asks for.
    """

    federation: str
    members: tuple[RosterMember, ...]
    corrupt_rate: float = 0.05
    security_bits: int = 40
    #: client id -> identity key, built once (every signature check reads it)
    _keys: Mapping[int, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.federation, "federation name")
        if isinstance(self.corrupt_rate, bool) or not isinstance(self.corrupt_rate, int | float) \
                or not 0 <= self.corrupt_rate < 0.5:
            raise InvalidParameter(f"roster policy corrupt_rate must be in [0, 0.5), found "
                                   f"{self.corrupt_rate!r}")
        if isinstance(self.security_bits, bool) or not isinstance(self.security_bits, int) \
                or not 1 <= self.security_bits <= 128:
            raise InvalidParameter(f"roster policy security_bits must be an integer in [1, 128], "
                                   f"found {self.security_bits!r}")
        if len(self.members) < 2:
            raise InvalidParameter(f"a roster needs at least 2 members, found {len(self.members)}")
        ids = [mm.client_id for mm in self.members]
        if len(set(ids)) != len(ids):
            raise InvalidParameter("roster client ids must be unique")
        keys = [mm.public_key for mm in self.members]
        if len(set(keys)) != len(keys):
            raise InvalidParameter("two roster members share an identity key; each enterprise "
                                   "needs its own")
        names = [mm.name for mm in self.members]
        if len(set(names)) != len(names):
            raise InvalidParameter("roster member names must be unique")
        if not isinstance(self.members, tuple) or list(ids) != sorted(ids):
            raise InvalidParameter("roster members must be a tuple in increasing client_id order "
                                   "(the digest depends on it); Roster.load and Roster.of sort "
                                   "them for you")
        object.__setattr__(self, "_keys", {mm.client_id: mm.public_key for mm in self.members})

    @classmethod
    def of(cls, federation: str, identities: Iterable[Identity], *, corrupt_rate: float = 0.05,
           security_bits: int = 40) -> Roster:
        """A roster giving ``identities`` the ids 0, 1, ... in order (simulations, demos)."""
        return cls(federation, tuple(ident.member(i) for i, ident in enumerate(identities)),
                   corrupt_rate=corrupt_rate, security_bits=security_bits)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(mm.client_id for mm in self.members)

    @property
    def public_keys(self) -> Mapping[int, bytes]:
        return types.MappingProxyType(self._keys)

    def member(self, client_id: int) -> RosterMember:
        for mm in self.members:
            if mm.client_id == client_id:
                return mm
        raise InvalidParameter(f"client {client_id} is not in roster {self.federation!r}")

    def id_of(self, public_key: bytes) -> int:
        """The client id pinned to ``public_key``."""
        for mm in self.members:
            if mm.public_key == public_key:
                return mm.client_id
        raise InvalidParameter(f"identity {fingerprint(public_key)} is not in roster "
                               f"{self.federation!r}")

    def verify(self, client_id: int, signature: bytes, message: bytes, *, what: str) -> None:
        """Raise :class:`AuthenticationFailed` naming the client unless it signed ``message``."""
        public_key = self.public_keys.get(client_id)
        if public_key is None:
            raise AuthenticationFailed(f"{what} from client {client_id}, which is not in the "
                                       "pinned roster")
        try:
            verify_signature(public_key, signature, message,
                             what=f"{what} from client {client_id}")
        except InvalidParameter:
            raise AuthenticationFailed(f"{what} from client {client_id}") from None

    def to_dict(self) -> dict[str, object]:
        return {"format": ROSTER_FORMAT, "version": _VERSION, "federation": self.federation,
                "policy": {"corrupt_rate": float(self.corrupt_rate),
                           "security_bits": self.security_bits},
                "members": [{"id": mm.client_id, "name": mm.name,
                             "public_key": mm.public_key.hex()} for mm in self.members]}

    @classmethod
    def from_dict(cls, data: object) -> Roster:
        if not isinstance(data, dict) or data.get("format") != ROSTER_FORMAT:
            raise InvalidParameter(f"not a secagg roster (expected format {ROSTER_FORMAT!r})")
        if data.get("version") != _VERSION:
            raise InvalidParameter(f"roster version {data.get('version')!r} is not supported "
                                   f"(expected {_VERSION})")
        members = data.get("members")
        if not isinstance(members, list):
            raise InvalidParameter("roster field 'members' must be a list")
        out = []
        for i, entry in enumerate(members):
            if not isinstance(entry, dict) or set(entry) != {"id", "name", "public_key"}:
                raise InvalidParameter(f"roster member #{i} must have exactly the fields id, "
                                       "name, public_key")
            try:
                key = bytes.fromhex(entry["public_key"])
            except (TypeError, ValueError):
                raise InvalidParameter(f"roster member #{i}: public_key must be 64 hex "
                                       "digits") from None
            out.append(RosterMember(client_id=entry["id"], name=entry["name"], public_key=key))
        out.sort(key=lambda mm: mm.client_id)
        federation = data.get("federation")
        if not isinstance(federation, str):
            raise InvalidParameter("roster field 'federation' must be a string")
        policy = data.get("policy", {})
        if not isinstance(policy, dict) or not set(policy) <= {"corrupt_rate", "security_bits"}:
            raise InvalidParameter("roster field 'policy' may hold only corrupt_rate and "
                                   "security_bits")
        return cls(federation, tuple(out), corrupt_rate=policy.get("corrupt_rate", 0.05),
                   security_bits=policy.get("security_bits", 40))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Roster:
        p = Path(path)
        try:
            data = json.loads(p.read_bytes())
        except FileNotFoundError:
            raise InvalidParameter(f"roster file {p} does not exist") from None
        except (OSError, ValueError) as exc:
            raise InvalidParameter(f"roster file {p} is not readable JSON: "
                                   f"{type(exc).__name__}") from None
        try:
            return cls.from_dict(data)
        except InvalidParameter as exc:
            raise InvalidParameter(f"roster file {p}: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding: what rounds bind to and what enterprises compare."""
        return hashlib.sha256(b"secagg-roster" + json.dumps(self.to_dict(), sort_keys=True)
                              .encode()).digest()

    def __len__(self) -> int:
        return len(self.members)
