"""What every protection mode shares: the round interface, its errors, and option checks.

The HTTP layer and the round coordinator only know :class:`RoundProtocol`: take a client's bytes,
say who is still awaited, close a stage, release a result. A mode is a :class:`ModeSpec`: how to
make a round's stored config from the operator's options, and how to build the protocol object
for it. The option helpers check JSON types and coarse ranges, each refusal naming the option,
what it takes and what was found; the protocol libraries check the finer rules.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from secagg.contract import ReleasedAggregate
from secagg.encoding import ParamSpec
from secagg.errors import InvalidParameter
from secagg.identity import Roster

__all__ = [
    "MAX_VECTOR_LENGTH",
    "ModeSpec",
    "Rejected",
    "RoundFailed",
    "RoundProtocol",
    "SessionRound",
    "bool_option",
    "bound_option",
    "found",
    "int_option",
    "known_options",
    "layout_option",
    "pinned_roster_ids",
    "rate_option",
    "vector_length_option",
]

#: The largest update a round may be opened for (2^28 parameters: 1 GiB of float32 per upload).
MAX_VECTOR_LENGTH = 2**28


class Rejected(Exception):
    """A client message was refused (HTTP ``status``); the round state is unchanged."""

    def __init__(self, status: int, code: str, detail: str, expected: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.expected = status, code, detail, expected


class RoundFailed(Exception):
    """The round cannot complete (too few clients, a protocol abort). ``culprit``: the client
    whose own signed or committed messages prove it caused the failure, if the protocol named
    one (:attr:`secagg.errors.ProtocolAbort.culprit`)."""

    def __init__(self, reason: str, *, culprit: int | None = None) -> None:
        super().__init__(reason)
        self.culprit = culprit


class RoundProtocol(Protocol):
    """What the coordinator needs from one round of one mode. Must be deterministic: the same
    accepted messages and advances in the same order rebuild the same state (crash recovery)."""

    @property
    def stage(self) -> str: ...
    @property
    def expected(self) -> frozenset[int]: ...
    @property
    def done(self) -> bool: ...
    def max_message_bytes(self) -> int: ...
    def claimed_sender(self, body: bytes) -> int | None: ...
    def receive(self, client_id: int, body: bytes) -> None: ...
    def advance(self) -> dict[int, bytes]: ...
    def result(self) -> tuple[ReleasedAggregate, bytes]:
        """The released aggregate's metadata (the coordinator fills in the round's id) and
        its payload."""


class SessionRound:
    """What every session-backed round delegates to its sans-IO server session unchanged: the
    stage name, who is awaited, whether it is over, and the body limit of the current stage.
    A session's stage enum ends at the value ``"done"``."""

    session: Any

    @property
    def stage(self) -> str:
        return str(self.session.stage.value)

    @property
    def expected(self) -> frozenset[int]:
        return frozenset(self.session.expected)

    @property
    def done(self) -> bool:
        return bool(self.session.stage.value == "done")

    def max_message_bytes(self) -> int:
        return int(self.session.max_message_bytes())


@dataclass(frozen=True)
class ModeSpec:
    """``make_config(num_clients, round_index, options, roster)`` -> JSON config stored with
    the round; ``build(config, participants, roster)`` -> a fresh :class:`RoundProtocol` for it.

    ``roster`` is the federation's pinned roster (public keys only), or None for a federation
    created without one (a store from before rosters); a mode that needs it refuses then.
    Warnings ``make_config`` emits (risks to utility the operator chose, such as a small
    federation's dropout odds) reach the operator as the opened round's ``notes``
    (:meth:`configure`).
    ``options_doc`` says where the mode's options are documented (named in refusals).

    Members left out of a round (culprits of earlier rounds): ``quorum(config)`` is the fewest
    participants the round can complete with (a round opened with fewer is refused instead of
    failing every time), and ``leave_out(options, left_out, index, num_clients)`` adjusts the
    operator's options so the round names no left-out member in a role (e.g. CKKS's dealer)."""

    name: str
    make_config: Callable[[int, int, dict[str, Any], Roster | None], dict[str, Any]]
    build: Callable[[dict[str, Any], frozenset[int], Roster | None], RoundProtocol]
    options_doc: str = "secagg_server.modes"
    quorum: Callable[[dict[str, Any]], int] = lambda config: 1
    leave_out: Callable[[dict[str, Any], frozenset[int], int, int], dict[str, Any]] = \
        lambda options, left_out, index, num_clients: options

    def configure(self, num_clients: int, index: int, options: dict[str, Any],
                  roster: Roster | None) -> tuple[dict[str, Any], tuple[str, ...]]:
        """:attr:`make_config`'s config, and the user warnings it raised as notes for the
        operator (risks they chose, e.g. a small federation's dropout odds); other warnings are
        issued again, as if not caught.

        ``catch_warnings`` is process-wide: a warning another thread raises during the call
        lands here too (the call is short, and the protocol work of other threads does not
        warn)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = self.make_config(num_clients, index, options, roster)
        notes: dict[str, None] = {}  # in order, once each
        for w in caught:
            if issubclass(w.category, UserWarning):
                notes[str(w.message)] = None
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno,
                                       source=w.source)
        return config, tuple(notes)


# ---- option checks ----------------------------------------------------------------------------

def found(value: Any) -> str:
    """``found <the value as JSON> (<its JSON type>)``, for an option's refusal."""
    if value is None:
        return "found null"
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = type(value).__name__
    text = text if len(text) <= 40 else text[:37] + "..."
    kind = ("a boolean" if isinstance(value, bool) else "an integer" if isinstance(value, int)
            else ("a number with a fraction" if math.isfinite(value) else "not a finite number")
            if isinstance(value, float) else "a string" if isinstance(value, str)
            else "a list" if isinstance(value, list) else "an object" if isinstance(value, dict)
            else type(value).__name__)
    return f"found {text} ({kind})"


def known_options(mode: str, options: dict[str, Any], allowed: Iterable[str]) -> None:
    """Refuse an option the mode does not take, listing the ones it does (``layout`` is taken
    by every mode that reads a model layout and is always allowed)."""
    unknown = set(options) - set(allowed) - {"layout"}
    if unknown:
        raise InvalidParameter(f"unknown {mode} option(s) {sorted(unknown)}; allowed: "
                               f"{sorted({*allowed, 'layout'})}")


def pinned_roster_ids(mode: str, roster: Roster | None, num_clients: int,
                      verifies: str) -> list[int]:
    """The roster's ids, which are the federation's client ids ``0..n-1``. A federation without a
    pinned roster is refused: its clients could not verify ``verifies``."""
    if roster is None:
        raise InvalidParameter(
            f"this federation has no pinned roster, so its clients cannot verify {verifies}; "
            "create the federation again with `secagg-server federation create --roster "
            "roster.json` (see README, 'Enrolling an enterprise')")
    ids = sorted(roster.ids)
    if ids != list(range(num_clients)):  # pragma: no cover - federation create enforces it
        raise InvalidParameter(f"the roster has ids {ids[:8]}, the federation's clients are "
                               f"0..{num_clients - 1} ({mode} rounds use roster ids)")
    return ids


def int_option(mode: str, options: dict[str, Any], name: str, default: int | None, low: int,
               high: int) -> int:
    """An integer option: a JSON integer (not a boolean, a string or ``10.0``) in [low, high]."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameter(f"{mode} option '{name}' must be an integer in [{low}, {high}] "
                               f"(a JSON integer: no fraction, no quotes), {found(value)}")
    return value


def bound_option(mode: str, options: dict[str, Any], name: str) -> float:
    """A positive bound: a finite JSON number > 0 (not a boolean, a string, NaN or infinity);
    1.0 when left out."""
    value = options.get(name, 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value <= 0:
        raise InvalidParameter(f"{mode} option '{name}' must be a finite number > 0 (a JSON "
                               f"number), {found(value)}")
    return float(value)


def rate_option(mode: str, options: dict[str, Any], name: str, high: float) -> float:
    """A rate: a finite JSON number in [0, high)."""
    value = options[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 <= value < high:
        raise InvalidParameter(f"{mode} option '{name}' must be a number in [0, {high:g}) (a JSON "
                               f"number), {found(value)}")
    return float(value)


def bool_option(mode: str, options: dict[str, Any], name: str) -> bool:
    """A flag: JSON true or false (not 0/1 or a string); false when left out."""
    value = options.get(name, False)
    if not isinstance(value, bool):
        raise InvalidParameter(f"{mode} option '{name}' must be true or false (a JSON boolean), "
                               f"{found(value)}")
    return value



def layout_option(mode: str, options: dict[str, Any]) -> ParamSpec | None:
    """The model layout an operator passed as option ``layout`` (a :class:`ParamSpec` as its
    JSON, a string or the parsed list), or None when left out. It sets ``vector_length``: a
    given ``vector_length`` that disagrees with it is refused, naming both."""
    if "layout" not in options:
        return None
    raw = options["layout"]
    if isinstance(raw, list):
        raw = json.dumps(raw)
    if not isinstance(raw, str):
        raise InvalidParameter(f"{mode} option 'layout' must be a ParamSpec's JSON (a list of "
                               f'{{"name", "shape", "dtype"}} objects, or that list as a '
                               f"string), {found(raw)}")
    spec = ParamSpec.from_json(raw)
    if not spec.tensors:
        raise InvalidParameter(f"{mode} option 'layout' names no tensors")
    if not 1 <= spec.size <= MAX_VECTOR_LENGTH:
        raise InvalidParameter(f"{mode} option 'layout' describes {spec.size} parameters; a "
                               f"round takes 1 to {MAX_VECTOR_LENGTH} (2^28)")
    given = options.get("vector_length")
    if given is not None and given != spec.size:
        raise InvalidParameter(f"{mode} option 'vector_length' is {found(given)[6:]} but the "
                               f"model layout 'layout' has {spec.size} parameters; leave "
                               "'vector_length' out (the layout sets it) or fix the one that is "
                               "wrong")
    return spec


def vector_length_option(mode: str, options: dict[str, Any]) -> int:
    """``vector_length`` (required unless ``layout`` sets it), at most 2^28."""
    if "vector_length" not in options:
        raise InvalidParameter(f"{mode} rounds need 'vector_length' (parameters per update) or "
                               "'layout' (the model's ParamSpec JSON, which sets it)")
    value = options["vector_length"]
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_VECTOR_LENGTH:
        raise InvalidParameter(f"{mode} option 'vector_length' must be an integer in [1, "
                               f"{MAX_VECTOR_LENGTH}]: this server takes at most 2^28 parameters "
                               f"per update, {found(value)}")
    return int_option(mode, options, "vector_length", None, 1, MAX_VECTOR_LENGTH)
