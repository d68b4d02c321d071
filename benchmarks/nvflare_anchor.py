"""NVIDIA FLARE's TenSEAL CKKS recipe, reproduced as FLARE configures it, for side-by-side runs.

What FLARE does (``nvflare/lighter/impl/he.py``, ``nvflare/app_opt/he/model_encryptor.py``,
``intime_accumulate_model_aggregator.py``, ``decomposers.py``):

* Provisioning: ``ts.context(CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40],
  encryption_type=SYMMETRIC)``, relinearisation keys, ``global_scale = 2**40``. Clients get the
  context with the secret key; the server gets it with relin keys only. The key is made by the
  provisioner, not by the clients.
* Client: for every tensor, ``values * n_iter`` (weights applied in the clear before encryption),
  then ``ts.ckks_vector(context, values).serialize()``: one CKKS vector per tensor.
* Server: ``ts.ckks_vector_from(server_context, bytes)`` per client and tensor, summed, then
  multiplied by ``1 / sum(n_iter)`` (the server knows every client's weight); the aggregate's
  ``CKKSVector`` objects are shipped through FLARE's FOBS decomposer, which serialises the
  vector *and its context* (~0.66 MB) for every tensor.
* Client decryption: the vector is loaded against the client context and decrypted.

The parameter vector is split into realistic tensors: LoRA adapters of rank 16 on the four
attention projections (query, key, value, output) of a hidden-size-768 encoder, i.e. per layer
eight tensors of shape (16, 768) / (768, 16) = 12,288 values each, as many layers as fit, and the
remainder as one ``classifier.weight`` tensor (shape ``(remainder,)``). 1M parameters -> 10
layers (80 tensors) + a 16,960-value classifier.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["NVFlareCKKS", "lora_tensor_shapes", "split_tensors"]

_HIDDEN = 768
_RANK = 16
_MODULES = ("query", "key", "value", "output")


def lora_tensor_shapes(total: int) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of a LoRA-style split of ``total`` parameters (see module docstring)."""
    per_tensor = _HIDDEN * _RANK
    shapes: list[tuple[str, tuple[int, ...]]] = []
    left = total
    layer = 0
    while left >= 8 * per_tensor:
        for module in _MODULES:
            shapes.append((f"encoder.layer.{layer}.attention.{module}.lora_A", (_RANK, _HIDDEN)))
            shapes.append((f"encoder.layer.{layer}.attention.{module}.lora_B", (_HIDDEN, _RANK)))
        left -= 8 * per_tensor
        layer += 1
    if left:
        shapes.append(("classifier.weight", (left,)))
    return shapes


def split_tensors(vector: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
    """Cut a flat vector into the tensors of :func:`lora_tensor_shapes`."""
    out: dict[str, npt.NDArray[np.float32]] = {}
    offset = 0
    for name, shape in lora_tensor_shapes(vector.size):
        size = int(np.prod(shape))
        out[name] = vector[offset : offset + size].reshape(shape)
        offset += size
    return out


@contextlib.contextmanager
def _quiet_cpp_stdout() -> Iterator[None]:
    """TenSEAL prints a multi-ciphertext warning to C++ stdout for every large vector."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


@dataclass(slots=True)
class _Provisioned:
    client_context: Any
    server_context: Any
    server_context_bytes: int


class NVFlareCKKS:
    """The recipe's three parties in one process."""

    def __init__(self) -> None:
        import tenseal as ts

        self._ts = ts
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=8192,
            coeff_mod_bit_sizes=[60, 40, 40],
            encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
        )
        ctx.generate_relin_keys()
        ctx.global_scale = 2**40
        client = ctx.serialize(
            save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=True
        )
        server = ctx.serialize(
            save_public_key=False,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=True,
        )
        self.p = _Provisioned(ts.context_from(client), ts.context_from(server), len(server))

    def encrypt(self, tensors: Mapping[str, npt.NDArray[np.float32]], n_iter: float) -> dict[str, bytes]:
        """HEModelEncryptor.encryption: weigh in the clear, one serialised vector per tensor."""
        ts = self._ts
        out: dict[str, bytes] = {}
        with _quiet_cpp_stdout():
            for name, arr in tensors.items():
                values = arr.ravel() * np.float64(n_iter)
                out[name] = ts.ckks_vector(self.p.client_context, values).serialize()
        return out

    def aggregate(self, uploads: Sequence[Mapping[str, bytes]], n_iters: Sequence[float]) -> dict[str, Any]:
        """HEInTimeAccumulateWeightedAggregator.accept + aggregate: the mean as CKKSVectors."""
        ts = self._ts
        total: dict[str, Any] = {}
        for upload in uploads:
            for name, blob in upload.items():
                vec = ts.ckks_vector_from(self.p.server_context, blob)
                total[name] = vec if name not in total else total[name] + vec
        scale = 1.0 / float(sum(n_iters))
        return {name: vec * scale for name, vec in total.items()}

    @staticmethod
    def decompose(aggregate: Mapping[str, Any]) -> dict[str, tuple[bytes, bytes]]:
        """FLARE's FOBS CKKSVectorDecomposer: each vector ships with its serialised context."""
        return {name: (vec.serialize(), vec.context().serialize()) for name, vec in aggregate.items()}

    def decrypt(self, aggregate: Mapping[str, tuple[bytes, bytes]]) -> dict[str, npt.NDArray[np.float64]]:
        """HEModelDecryptor: load each vector against the client context and decrypt."""
        ts = self._ts
        return {
            name: np.asarray(ts.ckks_vector_from(self.p.client_context, vec).decrypt())
            for name, (vec, _ctx) in aggregate.items()
        }
