"""Enrolling an enterprise: its long-term identity, its public entry, the federation's roster.

What ``secagg-client identity ...`` and ``secagg-client roster ...`` run::

    # each enterprise, on its own machine (the private key never leaves the file):
    identity = create_identity("energy.identity.json", name="energy")   # + energy.identity.json.pub.json
    # the enterprises exchange their public entries (e-mail, a shared repository, ...) and
    # one of them (or each of them) assembles the roster, ids 0.. in the order given:
    roster = assemble_roster("city", ["energy.identity.json.pub.json", "security.pub.json", ...])
    roster.save("roster.json")
    # every enterprise compares the fingerprints and the digest over a second channel
    # (a call, a signed ticket) before pinning the roster: `secagg-client roster show roster.json`

A public entry is ``{"name": NAME, "public_key": HEX}``: the enterprise's name and its Ed25519
identity public key, nothing secret.

For demos and tests on one machine, :func:`enrol_locally` plays every enterprise's part at once:
one identity per enterprise directory and the roster, skipping only the exchange.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from secagg.errors import InvalidParameter
from secagg.identity import Identity, Roster, RosterMember

__all__ = ["LocalEnrolment", "assemble_roster", "create_identity", "enrol_locally",
           "load_public_entry", "public_entry_path", "write_public_entry"]


def public_entry_path(identity_path: str | os.PathLike[str]) -> Path:
    """Where :func:`create_identity` writes the public entry: ``PATH.pub.json``."""
    p = Path(identity_path)
    return p.with_name(p.name + ".pub.json")


def write_public_entry(identity: Identity, path: str | os.PathLike[str]) -> Path:
    """Write ``identity``'s public entry (name and public key; readable by anyone) to ``path``."""
    p = Path(path)
    p.write_text(json.dumps({"name": identity.name, "public_key": identity.public_key.hex()},
                            indent=2) + "\n")
    return p


def create_identity(path: str | os.PathLike[str], *, name: str) -> Identity:
    """Create the identity file ``path`` (0600; refused if it exists) and its public entry
    ``PATH.pub.json`` (refused if that exists: it could belong to another identity)."""
    pub = public_entry_path(path)
    if pub.exists():
        raise InvalidParameter(f"{pub} already exists; it may be the public entry of another "
                               "identity. Move it aside or choose another --out")
    identity = Identity.create(path, name=name)
    write_public_entry(identity, pub)
    return identity


def load_public_entry(path: str | os.PathLike[str]) -> tuple[str, bytes]:
    """``(name, public key)`` from a public entry file, or :class:`InvalidParameter` naming it."""
    p = Path(path)
    try:
        data = json.loads(p.read_bytes())
    except FileNotFoundError:
        raise InvalidParameter(f"public entry {p} does not exist") from None
    except (OSError, ValueError) as exc:
        raise InvalidParameter(f"public entry {p} is not readable JSON ({type(exc).__name__})") \
            from None
    if isinstance(data, dict) and "private_key" in data:
        raise InvalidParameter(f"{p} is a private identity file, not a public entry: send and "
                               f"use its .pub.json instead (and keep {p} to yourself)")
    if not isinstance(data, dict) or set(data) != {"name", "public_key"} \
            or not isinstance(data["name"], str) or not isinstance(data["public_key"], str):
        raise InvalidParameter(f"public entry {p} must be a JSON object with exactly the string "
                               "fields name and public_key (what `secagg-client identity "
                               "create` writes as PATH.pub.json)")
    try:
        key = bytes.fromhex(data["public_key"])
    except ValueError:
        raise InvalidParameter(f"public entry {p}: public_key must be 64 hex digits") from None
    if len(key) != 32:
        raise InvalidParameter(f"public entry {p}: public_key must be 64 hex digits (an Ed25519 "
                               f"key), found {len(data['public_key'])}")
    return data["name"], key


def assemble_roster(federation: str, entries: list[str | os.PathLike[str]]) -> Roster:
    """The roster of ``federation`` from public entry files; ids 0, 1, ... in the given order.

    Refuses duplicate names or keys (each enterprise needs its own identity) with the files
    involved named."""
    members = []
    seen: dict[bytes, Path] = {}
    names: dict[str, Path] = {}
    for i, entry in enumerate(entries):
        name, key = load_public_entry(entry)
        if key in seen:
            raise InvalidParameter(f"{entry} and {seen[key]} hold the same identity key; each "
                                   "enterprise needs its own identity")
        if name in names:
            raise InvalidParameter(f"{entry} and {names[name]} both use the name {name!r}; "
                                   "names must be unique in a roster")
        seen[key], names[name] = Path(entry), Path(entry)
        members.append(RosterMember(client_id=i, name=name, public_key=key))
    return Roster(federation, tuple(members))


@dataclass(frozen=True)
class LocalEnrolment:
    """What :func:`enrol_locally` made: the roster and each member's identity file."""

    roster: Roster
    roster_path: Path
    identity_paths: tuple[Path, ...]  # in client-id order (the roster's ids 0..n-1)

    def identity(self, client_id: int) -> Identity:
        return Identity.load(self.identity_paths[client_id])


def enrol_locally(directory: str | Path, federation: str, names: list[str] | tuple[str, ...],
                  ) -> LocalEnrolment:
    """Demos and tests on ONE machine: every enterprise's identity and the federation's roster.

    Writes ``directory/<name>/identity.json`` (0600, in a 0700 directory: one directory per
    enterprise, as if on its own machine) for each name, and ``directory/roster.json`` with ids
    0, 1, ... in the order of ``names``. In a real federation each enterprise runs
    ``secagg-client identity create`` on its own machine and the roster is assembled from the
    public entries they exchange (README, "Enrolling an enterprise"); this helper only skips
    the exchange, never the checks.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    identities: list[Identity] = []
    for name in names:
        home = root / name
        home.mkdir(mode=0o700, exist_ok=True)
        os.chmod(home, 0o700)
        path = home / "identity.json"
        identities.append(Identity.create(path, name=name))
        paths.append(path)
    roster = Roster.of(federation, identities)
    roster_path = root / "roster.json"
    roster.save(roster_path)
    return LocalEnrolment(roster=roster, roster_path=roster_path, identity_paths=tuple(paths))
