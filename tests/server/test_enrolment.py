"""Enrolling enterprises and binding the service's rounds to the roster, through the real CLIs.

``secagg-client identity create`` / ``roster create`` / ``roster show`` as an enterprise runs
them, ``secagg-server federation create --roster`` as the operator does, and a
``secagg-client`` whose pinned roster is not the server's (it refuses the round, naming both
digests) or whose identity is not its token's roster entry (a clear error before any round).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from secagg.identity import Identity, Roster
from tests.server.conftest import Federation, HonestClients, expect_error, updates

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, module: str = "clients", cwd: Path | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT)


def test_enrolment_through_the_clis(tmp_path: Path) -> None:
    pubs = []
    for name in ("energy", "security", "ops"):
        home = tmp_path / name
        home.mkdir()
        out = _cli("identity", "create", "--out", str(home / "id.json"), "--name", name)
        assert out.returncode == 0, out.stderr
        ident = Identity.load(home / "id.json")
        assert ident.public_key.hex() in out.stdout and ident.fingerprint in out.stdout
        assert stat.S_IMODE((home / "id.json").stat().st_mode) == 0o600
        pub = home / "id.json.pub.json"
        assert json.loads(pub.read_text()) == {"name": name, "public_key": ident.public_key.hex()}
        pubs.append(str(pub))
    # created once: a second create is refused and the file is kept
    again = _cli("identity", "create", "--out", str(tmp_path / "energy" / "id.json"), "--name", "x")
    assert again.returncode == 2 and "already exists" in again.stderr
    out = _cli("roster", "create", "--federation", "city", "--out", str(tmp_path / "roster.json"),
               *pubs)
    assert out.returncode == 0, out.stderr
    roster = Roster.load(tmp_path / "roster.json")
    assert [m.name for m in roster.members] == ["energy", "security", "ops"]
    assert roster.ids == (0, 1, 2)
    shown = _cli("roster", "show", str(tmp_path / "roster.json"))
    assert shown.returncode == 0
    assert roster.digest().hex() in shown.stdout
    for mm in roster.members:
        assert f"{mm.client_id}  {mm.name}" in shown.stdout and mm.fingerprint in shown.stdout
    shown_json = json.loads(_cli("roster", "show", str(tmp_path / "roster.json"), "--json").stdout)
    assert shown_json["digest"] == roster.digest().hex()
    # what a roster refuses: a private identity file, the same key twice
    bad = _cli("roster", "create", "--federation", "city", "--out", str(tmp_path / "r2.json"),
               pubs[0], str(tmp_path / "energy" / "id.json"))
    assert bad.returncode == 2 and "private identity file" in bad.stderr
    bad = _cli("roster", "create", "--federation", "city", "--out", str(tmp_path / "r2.json"),
               pubs[0], pubs[0])
    assert bad.returncode == 2 and "same identity key" in bad.stderr
    # the operator: the roster decides the name and the size
    data = str(tmp_path / "srv")
    for args, why in ((["--name", "town"], "is for federation 'city'"),
                      (["--name", "city", "--clients", "2"], "does not match the roster's 3")):
        out = _cli("federation", "create", "--data", data, "--roster",
                   str(tmp_path / "roster.json"), *args, module="server")
        assert out.returncode == 2 and why in out.stderr, out.stderr
    out = _cli("federation", "create", "--data", data, "--name", "city", "--roster",
               str(tmp_path / "roster.json"), "--json", module="server")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["roster_digest"] == roster.digest().hex()
    assert len(created["client_tokens"]) == 3
    listed = _cli("federation", "list", "--data", data, module="server")
    assert roster.digest().hex() in listed.stdout


def test_passive_rounds_are_refused_by_the_service(fed3: Federation) -> None:
    with fed3.op() as op:
        body = expect_error(op.post("/v1/rounds", json={"mode": "masking", "options": {
            "vector_length": 10, "active": False}}), 400, "invalid_options")
        assert "passive" in body["detail"].lower() and "library" in body["detail"]
        assert "honest-but-curious" in body["detail"]
        resp = op.post("/v1/rounds", json={"mode": "masking", "options": {
            "vector_length": 10, "active": True}})
        assert resp.status_code == 201, resp.text
        config = resp.json()["config"]
    assert config["active"] is True
    assert config["roster_digest"] == fed3.roster.digest().hex()


def _client(fed: Federation, tmp: Path, i: int, roster: Path, identity: Path,
            rounds: int = 1) -> subprocess.Popen[str]:
    tok = tmp / f"tok-{i}"
    tok.write_text(fed.tokens[i])
    os.chmod(tok, 0o600)
    np.save(tmp / f"u{i}.npy", np.zeros(10, np.float32))
    return subprocess.Popen([sys.executable, "-m", "secagg_clients", "--server", fed.server.url,
                             "--token-file", str(tok), "--identity", str(identity), "--roster",
                             str(roster), "--update", str(tmp / f"u{i}.npy"), "--rounds",
                             str(rounds)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT)


def test_a_client_pinning_another_roster_refuses_the_round_naming_both_digests(
        fed3: Federation, tmp_path: Path) -> None:
    # same federation name and member 2, but another key for member 0: a substituted roster
    members = list(fed3.roster.members)
    impostor = Identity.generate(members[0].name)
    other = Roster(fed3.roster.federation, (impostor.member(0), *members[1:]))
    other.save(tmp_path / "other-roster.json")
    proc = _client(fed3, tmp_path, 2, tmp_path / "other-roster.json",
                   fed3.enrolled.identity_paths[2])
    ups = updates(3, 10)
    honest = HonestClients(fed3, [0, 1], ups)
    with fed3.op() as op:
        resp = op.post("/v1/rounds", json={"mode": "masking", "stage_timeout_s": 3,
                                           "options": {"vector_length": 10}})
        assert resp.status_code == 201
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out
    line = next(x for x in out.splitlines() if x.startswith("round 0: refused"))
    assert fed3.roster.digest().hex()[:16] in line and other.digest().hex()[:16] in line
    for t in honest.threads:  # n=3 needs all three (threshold 3): the honest pair is refused
        t.join(60)
    assert set(honest.errors) == {0, 1}


def test_an_identity_that_is_not_the_tokens_roster_entry_is_named_before_any_round(
        fed3: Federation, tmp_path: Path) -> None:
    proc = _client(fed3, tmp_path, 1, fed3.enrolled.roster_path, fed3.enrolled.identity_paths[0])
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "gives client 1 to enterprise-1" in out and "this identity is enterprise-0" in out
    # and the server never saw a private key: its store holds the public roster only
    stored = b"".join(p.read_bytes() for p in fed3.server.data_dir.rglob("*") if p.is_file())
    for i in range(3):
        private = json.loads(fed3.enrolled.identity_paths[i].read_text())["private_key"]
        assert private.encode() not in stored and bytes.fromhex(private) not in stored
    assert httpx.get(fed3.server.url + "/healthz").status_code == 200
