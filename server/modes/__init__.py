"""Protection modes as adapters over the sans-IO server sessions of :mod:`secagg`.

The HTTP layer and the round coordinator only know :class:`RoundProtocol` (see
:mod:`secagg_server.modes.base`); each mode maps it onto its protocol core, so the service never
holds its own copy of a protocol. One module per mode:

* :mod:`~secagg_server.modes.masking`: pairwise masks (SecAgg+), active mode, roster-bound;
* :mod:`~secagg_server.modes.ckks`: CKKS encryption, roster-bound; it loads TenSEAL, so it is
  imported only when a ckks round is opened or rebuilt (a masking-only server never loads it);
* :mod:`~secagg_server.modes.ckks_threshold`: threshold CKKS (``ckks-threshold``: no single key
  holder, t-out-of-n decryption, the plaintext sum released), roster-bound, loaded lazily too;
* :mod:`~secagg_server.modes.plain`: no protection, benchmarks only (``--allow-plain``).

Registration is explicit: importing a mode module registers nothing. :func:`default_modes` builds
the set a server offers (the built-in modes, ``plain`` only when asked, and every mode added with
:func:`register_mode` before the server starts); a :class:`ModeRegistry` refuses a second mode
under a name it already has (:class:`DuplicateMode`), so no mode is ever silently replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from secagg.errors import InvalidParameter
from secagg.identity import Roster

from .base import ModeSpec, Rejected, RoundFailed, RoundProtocol
from .masking import MASKING_MODE
from .plain import PLAIN_MODE

__all__ = ["BUILTIN_MODES", "DuplicateMode", "ModeRegistry", "ModeSpec", "Rejected",
           "RoundFailed", "RoundProtocol", "default_modes", "register_mode"]

#: The modes this package implements (``plain`` is offered only with ``--allow-plain``).
BUILTIN_MODES = ("masking", "ckks", "ckks-threshold", "plain")


class DuplicateMode(ValueError):
    """A mode was registered under a name that already has one."""


class ModeRegistry(Mapping[str, ModeSpec]):
    """Modes by name, each name registered once (a second registration raises
    :class:`DuplicateMode` instead of replacing the first)."""

    def __init__(self, specs: Iterable[ModeSpec] = ()) -> None:
        self._specs: dict[str, ModeSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: ModeSpec) -> None:
        if not isinstance(spec, ModeSpec):
            raise TypeError(f"a mode is registered as a ModeSpec, found {type(spec).__name__}")
        if not isinstance(spec.name, str) or not spec.name:
            raise ValueError(f"a mode's name is a non-empty string, found {spec.name!r}")
        if spec.name in self._specs:
            raise DuplicateMode(f"mode {spec.name!r} is already registered: a name stands "
                                "for one protocol; register this one under another name")
        self._specs[spec.name] = spec

    def __getitem__(self, name: str) -> ModeSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"ModeRegistry({sorted(self._specs)})"


# ---- ckks, loaded on first use -----------------------------------------------------------------

def _ckks_config(num_clients: int, index: int, options: dict[str, Any],
                 roster: Roster | None) -> dict[str, Any]:
    from .ckks import ckks_config

    return ckks_config(num_clients, index, options, roster)


def _ckks_round(config: dict[str, Any], participants: frozenset[int],
                roster: Roster | None) -> RoundProtocol:
    from .ckks import CKKSRound

    return CKKSRound(config, participants, roster)


def _ckks_leave_out(options: dict[str, Any], left_out: frozenset[int], index: int,
                    num_clients: int) -> dict[str, Any]:
    """The dealer rotates over the members not left out; a named dealer that is left out is
    refused."""
    if not left_out:
        return options
    if "dealer" in options:
        if options["dealer"] in left_out:
            raise InvalidParameter(f"ckks option 'dealer' names client {options['dealer']}, "
                                   "which is left out of this federation's rounds (named as "
                                   "the culprit of an earlier round); name another member")
        return options
    remaining = [c for c in range(num_clients) if c not in left_out]
    if not remaining:
        return options
    return {**options, "dealer": remaining[index % len(remaining)]}


CKKS_MODE = ModeSpec("ckks", _ckks_config, _ckks_round,
                     options_doc="secagg_server.modes.ckks (ckks options) and "
                     "secagg.ckks.CKKSRoundConfig",
                     quorum=lambda config: int(config["min_clients"]), leave_out=_ckks_leave_out)

# ---- ckks-threshold, loaded on first use as well ----------------------------------------------

def _threshold_config(num_clients: int, index: int, options: dict[str, Any],
                      roster: Roster | None) -> dict[str, Any]:
    from .ckks_threshold import threshold_config

    return threshold_config(num_clients, index, options, roster)


def _threshold_round(config: dict[str, Any], participants: frozenset[int],
                     roster: Roster | None) -> RoundProtocol:
    from .ckks_threshold import ThresholdRound

    return ThresholdRound(config, participants, roster)


def _threshold_quorum(config: dict[str, Any]) -> int:
    """Uploaders and statement signers both come from the members that advertised and dealt."""
    return max(int(config["quorum"]), int(config["min_uploaders"]))


CKKS_THRESHOLD_MODE = ModeSpec("ckks-threshold", _threshold_config, _threshold_round,
                               options_doc="secagg_server.modes.ckks_threshold (ckks-threshold "
                               "options) and secagg.ckks.threshold.ThresholdRoundConfig",
                               quorum=_threshold_quorum)

# ---- the server's set --------------------------------------------------------------------------

_ADDED = ModeRegistry()  # modes added with register_mode, in this process


def register_mode(spec: ModeSpec) -> None:
    """Add a mode to every server this process starts from now on (:func:`default_modes`).

    Call it before the server starts (a plugin's own ``main`` does, then runs
    ``secagg_server.cli.main``). A built-in mode's name, or one already added, is refused
    (:class:`DuplicateMode`)."""
    if spec.name in BUILTIN_MODES:
        raise DuplicateMode(f"mode {spec.name!r} is built in (the built-in modes are "
                            f"{', '.join(BUILTIN_MODES)}); register this one under another name")
    _ADDED.register(spec)


def default_modes(*, allow_plain: bool = False) -> ModeRegistry:
    """The modes a server offers: ``masking``, ``ckks`` and ``ckks-threshold``, ``plain`` when
    ``allow_plain`` (benchmarks only), and every mode added with :func:`register_mode`. A fresh
    registry each call; nothing is imported for the CKKS modes until such a round is opened or
    rebuilt."""
    return ModeRegistry([MASKING_MODE, CKKS_MODE, CKKS_THRESHOLD_MODE,
                         *([PLAIN_MODE] if allow_plain else []),
                         *_ADDED.values()])
