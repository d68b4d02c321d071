"""Decode error of CKKS sums against scale, prime and encoding, measured with SEAL itself.

Run: ``python -m benchmarks.ckks_precision [--clients 10] [--chunks 8] [--json PATH]``.

For each setting, ``clients`` fresh symmetric encryptions (one throwaway key) of uniform values in
[-1, 1] are summed with SEAL's evaluator, decrypted and decoded; the error of the sum is reported
in units of the scale (``err * 2^s``: the noise the parameter formula of
:mod:`secagg.ckks.presets` budgets for) and absolute. Slot encoding puts two reals per complex
slot (the named presets); coefficient encoding one real per coefficient (packed parameters). The
formula's bound ``E = 7.4 sqrt(n (3.2^2 + 1/12))`` is printed beside the coefficient rows.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import Any

import numpy as np

from secagg.ckks.presets import noise_bound
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.seal_codec import SealSession

SETTINGS = [  # (prime bits, scale bits)
    (31, 23),
    (31, 20),
    (40, 30),
    (60, 40),
]


def measure(bits: int, scale_bits: int, encoding: str, clients: int, chunks: int,
            n: int = 8192) -> dict[str, Any]:
    session = SealSession(poly_modulus_degree=n, coeff_modulus_bits=(bits,), level_primes=1,
                          scale_bits=scale_bits)
    key = session.keys_from_seed(SecretBytes(secrets.token_bytes(64), label="precision-bench"))
    rng = np.random.default_rng(0)  # benchmark data, not secret
    errors = []
    for _ in range(chunks):
        values = rng.uniform(-1.0, 1.0, (clients, n))
        acc = None
        for row in values:
            if encoding == "coefficients":
                blob = key.encrypt_coefficients(row)
            else:
                blob = key.encrypt(row.view(np.complex128))
            ct = session.load(blob, what="bench")
            if acc is None:
                acc = ct
            else:
                session.add_inplace(acc, ct)
        if encoding == "coefficients":
            got = key.decrypt_coefficients(acc)
        else:
            got = key.decrypt_exact(acc).view(np.float64)
        errors.append(got - values.sum(axis=0))
    err = np.concatenate(errors) * session.scale
    return {
        "prime_bits": bits,
        "scale_bits": scale_bits,
        "encoding": encoding,
        "clients": clients,
        "values": int(err.size),
        "std_scale_units": float(np.std(err)),
        "max_scale_units": float(np.max(np.abs(err))),
        "max_abs_error": float(np.max(np.abs(err)) / session.scale),
        "formula_bound_scale_units": noise_bound(clients) if encoding == "coefficients" else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--chunks", type=int, default=8, help="ciphertexts per setting (8192 reals each)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    rows = [measure(b, s, enc, args.clients, args.chunks) for b, s in SETTINGS
            for enc in ("slots", "coefficients")]
    print(f"{'prime':>5} {'scale':>5} {'encoding':>12} {'std/unit':>9} {'max/unit':>9} {'bound':>7} "
          f"{'max abs error':>14}")
    for r in rows:
        bound = f"{r['formula_bound_scale_units']:.1f}" if r["formula_bound_scale_units"] else "-"
        print(f"{r['prime_bits']:>5} {r['scale_bits']:>5} {r['encoding']:>12} "
              f"{r['std_scale_units']:>9.2f} {r['max_scale_units']:>9.1f} {bound:>7} "
              f"{r['max_abs_error']:>14.3g}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
