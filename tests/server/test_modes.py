"""The mode registry: explicit registration, duplicates refused, the operator told what a mode
warned about, and TenSEAL loaded only by a server that runs a ckks round."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from secagg.errors import InvalidParameter
from secagg.identity import Identity, Roster
from secagg_server import modes
from secagg_server.coordinator import Coordinator
from secagg_server.modes import (
    BUILTIN_MODES,
    DuplicateMode,
    ModeRegistry,
    ModeSpec,
    Rejected,
    default_modes,
    register_mode,
)
from secagg_server.modes.plain import PLAIN_MODE, PlainRound, plain_config
from secagg_server.store import Store


def _spec(name: str) -> ModeSpec:
    return ModeSpec(name, plain_config, PlainRound)


def test_the_default_set_is_explicit_and_plain_is_opt_in() -> None:
    assert sorted(default_modes()) == ["ckks", "ckks-threshold", "masking"]
    assert sorted(default_modes(allow_plain=True)) == ["ckks", "ckks-threshold", "masking",
                                                       "plain"]
    import secagg_server.modes.ckks  # importing a mode module registers nothing
    import secagg_server.modes.ckks_threshold  # noqa: F401
    assert sorted(default_modes()) == ["ckks", "ckks-threshold", "masking"]
    assert default_modes() is not default_modes()  # a fresh registry per server
    assert set(BUILTIN_MODES) == set(default_modes(allow_plain=True))


def test_a_registry_refuses_a_second_mode_under_one_name() -> None:
    registry = ModeRegistry([_spec("a")])
    with pytest.raises(DuplicateMode, match="mode 'a' is already registered"):
        registry.register(_spec("a"))
    with pytest.raises(DuplicateMode, match="'plain' is already registered"):
        ModeRegistry([PLAIN_MODE, _spec("plain")])
    assert registry["a"].name == "a" and list(registry) == ["a"] and len(registry) == 1
    with pytest.raises(TypeError, match="ModeSpec"):
        registry.register({"name": "b"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty string"):
        registry.register(_spec(""))


def test_register_mode_adds_to_every_server_and_refuses_clashes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modes, "_ADDED", ModeRegistry())  # this process's additions, for the test
    for builtin in BUILTIN_MODES:
        with pytest.raises(DuplicateMode, match=f"mode '{builtin}' is built in"):
            register_mode(_spec(builtin))
    register_mode(_spec("extra"))
    with pytest.raises(DuplicateMode, match="mode 'extra' is already registered"):
        register_mode(_spec("extra"))
    assert sorted(default_modes()) == ["ckks", "ckks-threshold", "extra", "masking"]
    assert sorted(default_modes(allow_plain=True)) == ["ckks", "ckks-threshold", "extra",
                                                       "masking", "plain"]


def test_a_small_federation_s_dropout_odds_reach_the_operator_as_notes(tmp_path: Path) -> None:
    """MaskingConfig.create warns that 3 clients with threshold 3 fail on any dropout: the
    warning is neither printed nor lost, it is the opened round's note (and a log line)."""
    roster = Roster.of("t", [Identity.generate(f"e{i}") for i in range(3)])

    async def main() -> tuple[tuple[str, ...], tuple[str, ...]]:
        store = Store(tmp_path / "data")
        store.create_federation("t", 3, roster.to_dict())
        coord = Coordinator(store, default_modes(allow_plain=True))
        await coord.start()
        try:
            small = await coord.open_round(1, 3, "masking", {"vector_length": 8}, 30.0)
            plain = await coord.open_round(1, 3, "plain", {"vector_length": 8}, 30.0)
            return small.notes, plain.notes
        finally:
            await coord.stop()
            store.close()

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        notes, quiet = asyncio.run(main())
    assert len(notes) == 1 and "a round fails if more than 0 client(s) drop" in notes[0], notes
    assert quiet == ()
    assert not [w for w in shown if issubclass(w.category, UserWarning)], shown


def test_a_config_the_round_s_session_refuses_is_a_400_and_no_round_is_stored(
        tmp_path: Path) -> None:
    """The protocol is built before the round is stored: a config that its session refuses
    (here a mode whose builder checks more than its config maker) answers 400 naming why, and
    leaves no open round behind (it once answered 500 after storing the round)."""

    def picky(config: dict[str, Any], participants: frozenset[int],
              roster: Roster | None) -> PlainRound:
        if config["vector_length"] > 4:
            raise InvalidParameter("picky rounds take at most 4 values")
        return PlainRound(config, participants, roster)

    async def main() -> tuple[BaseException | None, list[Any], int]:
        store = Store(tmp_path / "data")
        store.create_federation("t", 2)
        coord = Coordinator(store, {"picky": ModeSpec("picky", plain_config, picky)})
        await coord.start()
        try:
            refused: BaseException | None = None
            try:
                await coord.open_round(1, 2, "picky", {"vector_length": 8}, 30.0)
            except Rejected as exc:
                refused = exc
            stored = store.rounds()
            ok = await coord.open_round(1, 2, "picky", {"vector_length": 4}, 30.0)
            return refused, stored, ok.row.index
        finally:
            await coord.stop()
            store.close()

    refused, stored, index = asyncio.run(main())
    assert isinstance(refused, Rejected) and refused.status == 400
    assert refused.code == "invalid_options" and "at most 4 values" in refused.detail
    assert stored == [] and index == 0  # nothing stored; the next round is still index 0



def test_configure_turns_user_warnings_into_notes_and_passes_others_on() -> None:
    def make_config(n: int, index: int, options: dict[str, Any],
                    roster: Roster | None) -> dict[str, Any]:
        warnings.warn("a risk the operator chose", stacklevel=1)
        warnings.warn("a risk the operator chose", stacklevel=1)  # told once
        warnings.warn("an API going away", DeprecationWarning, stacklevel=1)
        return {"n": n}

    spec = ModeSpec("warns", make_config, PlainRound)
    with pytest.warns(DeprecationWarning, match="an API going away") as shown:
        config, notes = spec.configure(3, 0, {}, None)
    assert config == {"n": 3} and notes == ("a risk the operator chose",)
    assert [w.category for w in shown] == [DeprecationWarning]

#: Opens rounds through the app factory and its HTTP routes, in a fresh interpreter.
_LAZY_CKKS = """
import asyncio, sys
from pathlib import Path

import httpx

from secagg.identity import Identity, Roster
from secagg_server.app import create_app
from secagg_server.store import Store


def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] == "tenseal"
                  or m.startswith(("secagg.ckks", "secagg_server.modes.ckks")))


data = Path(sys.argv[1])
roster = Roster.of("t", [Identity.generate(f"e{i}") for i in range(3)])
store = Store(data)
operator, _ = store.create_federation("t", 3, roster.to_dict())
store.close()


async def serve(*opening):
    app = create_app(data)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://server", headers={
                "Authorization": f"Bearer {operator}"}) as op:
            infos = []
            for mode in opening:
                resp = await op.post("/v1/rounds", json={"mode": mode,
                                                         "options": {"vector_length": 8}})
                assert resp.status_code == 201, resp.text
                infos.append(resp.json())
            first = (await op.get("/v1/rounds/1")).json()
            return infos, first


assert not loaded(), loaded()
[info], _ = asyncio.run(serve("masking"))
assert info["mode"] == "masking" and info["notes"], info
assert not loaded(), loaded()
_, first = asyncio.run(serve())  # a restart rebuilds the open masking round from the store
assert first["status"] == "open" and first["stage"] == "advertise", first
assert not loaded(), loaded()
[info], _ = asyncio.run(serve("ckks"))  # the positive control: a ckks round loads it
assert info["mode"] == "ckks", info
assert "tenseal" in sys.modules and "secagg_server.modes.ckks" in sys.modules, loaded()
print("lazy ckks: ok")
"""


def test_a_masking_only_server_never_loads_tenseal(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _LAZY_CKKS, str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lazy ckks: ok" in out.stdout


def test_a_restart_rebuilds_an_open_ckks_round(tmp_path: Path) -> None:
    """The other half of loading ckks lazily: its rounds are still rebuilt after a restart."""
    identities = [Identity.generate(f"e{i}") for i in range(3)]
    roster = Roster.of("t", identities)

    async def run(open_one: bool) -> dict[str, Any]:
        store = Store(tmp_path / "data")
        if store.federation_id("t") is None:
            store.create_federation("t", 3, roster.to_dict())
        coord = Coordinator(store)
        await coord.start()
        try:
            if open_one:
                await coord.open_round(1, 3, "ckks", {"vector_length": 8}, 30.0)
            return {rid: live.protocol.stage for rid, live in coord.live.items()}
        finally:
            await coord.stop()
            store.close()

    assert asyncio.run(run(True)) == {1: "advert"}
    assert asyncio.run(run(False)) == {1: "advert"}
