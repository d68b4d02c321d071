"""The configuration checklist: pass/fail rows, each read from a real config object, each with its fix.

Every row is computed, none is a constant: the CKKS parameters are compared with the HE-standard
table (:data:`secagg.ckks.presets.HE_STANDARD_128_MAX_LOGQ`), the key sizes are read from keys the
library makes, the mask PRG is run and compared with AES-CTR from ``cryptography``, the masking
threshold is judged by :func:`secagg.masking.params.security_failure` against the assumed
corruption (SECURITY.md: against a deviating server, fewer than 2t - m corrupt holders per
neighbourhood of m = k + 1), the noise mode is read from the pipeline's :class:`DPConfig` and
the optimizer class it trains with, the quantisation headroom by
:func:`secagg.encoding.check_headroom`, and TLS from the server URL when the audit was given one
(otherwise the row says "not checked", never "pass").
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from secagg.errors import InvalidParameter

__all__ = ["FAIL", "NOT_CHECKED", "PASS", "Checklist", "Row", "checklist", "ckks_row",
           "headroom_row", "key_rows", "library_prg", "noise_row", "prg_row", "threshold_row",
           "tls_row"]

PASS, FAIL, NOT_CHECKED = "pass", "fail", "not checked"

#: a mask PRG as the checklist sees it: (key, count) -> count uint32 words
PRG = Callable[[bytes, int], npt.NDArray[np.uint32]]


@dataclass(frozen=True, slots=True)
class Row:
    item: str
    status: str  #: PASS, FAIL or NOT_CHECKED
    found: str  #: what the audit read
    requirement: str
    fix: str  #: what to change (also given for a pass: how to keep it)

    def to_dict(self) -> dict[str, str]:
        return {"item": self.item, "status": self.status, "found": self.found,
                "requirement": self.requirement, "fix": self.fix}


@dataclass(frozen=True)
class Checklist:
    rows: tuple[Row, ...]

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status == FAIL]

    @property
    def unchecked(self) -> list[Row]:
        return [r for r in self.rows if r.status == NOT_CHECKED]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [r.to_dict() for r in self.rows], "failed": len(self.failed),
                "not_checked": len(self.unchecked)}


class _CKKSLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def poly_modulus_degree(self) -> int: ...
    @property
    def coeff_modulus_bits(self) -> tuple[int, ...]: ...


def ckks_row(params: _CKKSLike) -> Row:
    """log2(q) of the parameter set against the HE standard's 128-bit bound for its ring."""
    from secagg.ckks.presets import HE_STANDARD_128_MAX_LOGQ

    n, bits = params.poly_modulus_degree, tuple(params.coeff_modulus_bits)
    logq = sum(bits)
    bound = HE_STANDARD_128_MAX_LOGQ.get(n)
    found = f"{params.name}: N={n}, q = {list(bits)} ({logq} bits)"
    req = "log2 q <= the HE standard's 128-bit bound (ternary secret, sigma 3.2)"
    if bound is None:
        return Row("CKKS parameters", FAIL, found + "; N not in the HE-standard table", req,
                   f"use N in {sorted(HE_STANDARD_128_MAX_LOGQ)} (8192 unless you know why not)")
    status = PASS if logq <= bound else FAIL
    rings = [k for k, v in sorted(HE_STANDARD_128_MAX_LOGQ.items()) if v >= logq]
    ring = str(rings[0]) if rings else "more than 32768"
    fix = (f"keep log2 q <= {bound} for N={n}" if status == PASS else
           f"drop primes to at most {bound} bits in total, or raise N to {ring} "
           "(secagg's presets: compact-n8192-q60)")
    return Row("CKKS parameters", status, f"{found}; bound {bound} bits", req, fix)


def key_rows(public_keys: Sequence[bytes] = ()) -> list[Row]:
    """X25519 (key agreement) and Ed25519 (identity) key sizes, read from keys the library makes
    and from the roster's pinned identity keys when one is given."""
    from secagg.hazmat.agreement import X25519KeyPair
    from secagg.hazmat.signing import SigningKey

    x = X25519KeyPair.generate()
    xlen = len(x.public_bytes)
    xcurve = type(x._private).__name__
    x_ok = xlen == 32 and "X25519" in xcurve
    ed = SigningKey.generate()
    curve = type(ed._private).__name__
    sizes = sorted({len(k) for k in public_keys}) or [len(ed.public_bytes)]
    ed_ok = "Ed25519" in curve and sizes == [32]
    where = f"{len(public_keys)} roster keys" if public_keys else "a key the library generates"
    return [
        Row("key agreement (X25519)", PASS if x_ok else FAIL,
            f"{xcurve}, {xlen}-byte public keys (~128-bit security)",
            "X25519, 32-byte keys", "keep secagg.hazmat.agreement (never a smaller curve)"),
        Row("identity keys (Ed25519)", PASS if ed_ok else FAIL,
            f"{curve}; {where}: sizes {sizes} bytes",
            "Ed25519, 32-byte public keys, pinned in the roster",
            "keep Ed25519 identities" if ed_ok else
            "re-create identities with secagg.identity.Identity.generate and re-issue the roster"),
    ]


def library_prg(key: bytes, count: int) -> npt.NDArray[np.uint32]:
    """The masking protocol's mask expansion (:class:`secagg.hazmat.prg.MaskExpander`)."""
    from secagg.hazmat.handles import SecretBytes
    from secagg.hazmat.prg import MaskExpander

    acc = np.zeros(count, dtype=np.uint32)
    MaskExpander().apply(acc, SecretBytes(key, label="checklist-key"))
    return acc


def _mask_key_bytes() -> int:
    """Length of a pairwise mask key as the protocol derives it (a real derivation)."""
    from secagg.hazmat.agreement import X25519KeyPair
    from secagg.masking import keys

    a, b = X25519KeyPair.generate(), X25519KeyPair.generate()
    return len(keys.pairwise_mask_key(a, b.public_bytes, 0, 1, bytes(32), 0))


def prg_row(prg: PRG = library_prg, *, key_bytes: int | None = None, name: str = "") -> Row:
    """Run ``prg`` and compare it with AES-CTR (zero IV) from ``cryptography``."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    kb = _mask_key_bytes() if key_bytes is None else key_bytes
    label = name or getattr(prg, "__qualname__", "prg")
    if kb < 16:
        found = f"{label}: mask keys of {kb} bytes ({8 * kb} bits)"
        aes = ok = False
    else:
        key = bytes(range(1, kb + 1))
        count = 4096
        try:
            got = np.asarray(prg(key, count), dtype=np.uint32)
        except (InvalidParameter, ValueError) as exc:
            got = np.zeros(0, dtype=np.uint32)
            label += f" (refused a {kb}-byte key: {exc})"
        enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        want = np.frombuffer(enc.update(bytes(4 * count)), dtype="<u4")
        aes = bool(np.array_equal(got, want))
        ok = aes
        found = (f"{label}: output {'equals' if aes else 'differs from'} AES-{8 * kb}-CTR of the "
                 f"key; mask keys {kb} bytes")
    return Row("mask PRG", PASS if ok else FAIL, found,
               "AES-CTR keystream under >= 128-bit keys (no seeded general-purpose RNG)",
               "keep secagg.hazmat.prg" if ok else
               "expand masks with AES-CTR under the full HKDF key (secagg.hazmat.prg); never "
               "fold the key into a seed for numpy's Mersenne Twister (flwrlabs/flower#7522)")


def threshold_row(*, num_clients: int, neighbours: int, threshold: int, corrupt_rate: float,
                  security_bits: int, active: bool) -> Row:
    """The masking threshold against the assumed corruption (SECURITY.md's 2t - m bound)."""
    from secagg.masking.params import security_failure

    m = neighbours + 1
    need = 2 * threshold - m if active else threshold
    risk = security_failure(num_clients=num_clients, neighbours=neighbours, threshold=threshold,
                            corrupt_rate=corrupt_rate, active=active)
    target = 2.0 ** -security_bits
    ok = risk <= target
    graph = "full graph" if neighbours >= num_clients - 1 else f"SecAgg+ graph k={neighbours}"
    found = (f"n={num_clients}, {graph}, t={threshold} of m={m} holders, "
             f"{'active' if active else 'honest-but-curious'} mode: a coalition needs {need} "
             f"corrupt holders in one neighbourhood; assumed corrupt rate {corrupt_rate:g} -> "
             f"failure probability {risk:.3g} (target 2^-{security_bits})")
    if neighbours >= num_clients - 1:
        found += f"; worst case {math.ceil(corrupt_rate * num_clients)} corrupt clients"
    fix = ("keep letting MaskingConfig.create choose k and t from the roster's policy" if ok else
           "open rounds without explicit neighbours/threshold (the parameter finder picks a "
           "(k, t) that meets the roster's policy), raise the threshold, or add clients")
    return Row("masking threshold vs corruption", PASS if ok else FAIL, found,
               "fewer than 2t - m corrupt holders per neighbourhood (t without a roster), except "
               f"with probability <= 2^-{security_bits}", fix)


def noise_row(dp_config: Any) -> Row:
    """Secure DP noise: the pipeline's noise mode and the optimizer class that adds it."""
    from ..secure_noise import CsprngDPOptimizer, SecurePrivacyEngine
    from ..trainer import NoiseMode

    mode = dp_config.noise_mode
    overridden = CsprngDPOptimizer.add_noise is not CsprngDPOptimizer.__mro__[1].add_noise
    engine_ok = SecurePrivacyEngine._prepare_optimizer is not \
        SecurePrivacyEngine.__mro__[1]._prepare_optimizer
    ok = mode is NoiseMode.SECURE and overridden and engine_ok
    return Row("secure noise", PASS if ok else FAIL,
               f"DPConfig.noise_mode = {mode.value}; CsprngDPOptimizer.add_noise "
               f"{'overrides' if overridden else 'does not override'} Opacus's",
               "DP noise and Poisson sampling from a CSPRNG (AES-CTR keyed from os.urandom)",
               "keep NoiseMode.SECURE (the default)" if ok else
               "train with NoiseMode.SECURE: insecure_fast uses torch's seedable PRNG, whose "
               "state an attacker can learn and subtract")


def headroom_row(*, num_clients: int, value_bits: int, max_weight: int, mod_bits: int,
                 extra: int = 0, clip: float = 1.0) -> Row:
    """Whether the sum of every client's largest value fits the modulus (no silent overflow)."""
    from secagg.encoding.quantize import FixedPoint, check_headroom

    fp = FixedPoint(clip=clip, value_bits=value_bits)
    worst = num_clients * max_weight * fp.levels + extra
    found = (f"{num_clients} clients x weight {max_weight} x {fp.levels} levels "
             f"({value_bits}-bit values) + {extra} = {worst} against 2^{mod_bits}")
    try:
        check_headroom(num_clients=num_clients, fixed_point=fp, max_weight=max_weight,
                       mod_bits=mod_bits, extra=extra)
    except InvalidParameter as exc:
        return Row("quantisation headroom", FAIL, found, "n * w * levels + noise < 2^mod_bits",
                   str(exc))
    used = worst / float(1 << mod_bits)
    return Row("quantisation headroom", PASS, f"{found}: the largest sum uses {used:.1%} of the "
               "modulus",
               "n * w * levels + noise < 2^mod_bits",
               "keep mod_bits chosen by MaskingConfig.create (it checks the headroom)")


def tls_row(server_url: str | None) -> Row:
    req = "TLS (https://) whenever the server is reachable off the loopback"
    if not server_url:
        return Row("TLS", NOT_CHECKED, "no server URL given to the audit (the ledger records none)",
                   req, "pass --server URL to check it")
    parts = urlsplit(server_url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme == "https":
        return Row("TLS", PASS, f"{server_url}: https", req,
                   "keep https; pin the CA bundle with --ca-cert")
    if parts.scheme == "http" and loopback:
        return Row("TLS", PASS, f"{server_url}: plain http on the loopback only", req,
                   "use https as soon as the server leaves this machine")
    return Row("TLS", FAIL, f"{server_url}: {parts.scheme or 'no scheme'} off the loopback", req,
               "start secagg-server with --tls-cert and --tls-key and connect with https:// "
               "(--ca-cert for a private CA)")


def checklist(*, masking: Any | None, corrupt_rate: float, security_bits: int,
              ckks_params: Sequence[_CKKSLike], dp_config: Any, server_url: str | None,
              roster_keys: Sequence[bytes] = (), prg: PRG = library_prg) -> Checklist:
    """Every row, from the masking config (a :class:`MaskingConfig`), CKKS parameter sets, the
    pipeline's :class:`DPConfig` and the server URL."""
    rows: list[Row] = [ckks_row(p) for p in ckks_params]
    rows += key_rows(roster_keys)
    rows.append(prg_row(prg))
    if masking is not None:
        rows.append(threshold_row(num_clients=masking.num_clients, neighbours=masking.neighbours,
                                  threshold=masking.threshold, corrupt_rate=corrupt_rate,
                                  security_bits=security_bits, active=masking.active))
    rows.append(noise_row(dp_config))
    if masking is not None:
        fp = masking.fixed_point
        rows.append(headroom_row(num_clients=masking.num_clients, value_bits=fp.value_bits,
                                 max_weight=masking.max_weight, mod_bits=masking.mod_bits,
                                 extra=masking.noise_headroom, clip=fp.clip))
    rows.append(tls_row(server_url))
    return Checklist(tuple(rows))
