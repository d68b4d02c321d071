"""How one update vector becomes ciphertext slots: chunking, complex packing, the trailer.

CKKS encodes ``N/2`` complex numbers per ciphertext. Packing two reals per slot (real and
imaginary part) halves the number of ciphertexts: addition acts on real and imaginary parts
independently, so a sum of packed vectors is the packed sum. A weighted round needs no
multiplication on the server: each client sends ``weight * update`` plus, in the trailer, its
``weight`` and a ``1`` (the contributor count), all encrypted, so the server learns neither the
weights nor the update and the decrypting client can check how many updates were summed.

Layout of the real stream: ``[w*x_0, ..., w*x_{M-1}, w, 1, 0-padding]`` chunked into
ciphertexts of ``N`` reals; real stream index ``2k`` is slot ``k``'s real part, ``2k+1`` its
imaginary part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secagg.errors import InvalidParameter

__all__ = ["TRAILER", "Layout"]

TRAILER = 2  # weight, count


@dataclass(frozen=True, slots=True)
class Layout:
    """The mapping for ``size`` parameters into ciphertexts of ``slots`` complex slots."""

    size: int
    slots: int

    def __post_init__(self) -> None:
        if self.size < 1:
            raise InvalidParameter(f"update size must be >= 1, found {self.size}")
        if self.slots < 1:
            raise InvalidParameter(f"slots must be >= 1, found {self.slots}")

    @property
    def reals_per_chunk(self) -> int:
        return 2 * self.slots

    @property
    def chunks(self) -> int:
        """Ciphertexts per update (ceil of (size + trailer) / reals per ciphertext)."""
        return -(-(self.size + TRAILER) // self.reals_per_chunk)

    def pack(self, update: npt.NDArray[np.floating], weight: float) -> list[npt.NDArray[np.complex128]]:
        """``weight * update`` plus the trailer, as one complex array per ciphertext."""
        if update.shape != (self.size,):
            raise InvalidParameter(f"update has shape {update.shape}; the round expects ({self.size},)")
        stream = np.zeros(self.chunks * self.reals_per_chunk, dtype=np.float64)
        np.multiply(update, weight, out=stream[: self.size], dtype=np.float64)
        stream[self.size] = weight
        stream[self.size + 1] = 1.0
        as_complex = stream.view(np.complex128)  # pairs (re, im) -> one complex slot
        return [as_complex[i * self.slots : (i + 1) * self.slots] for i in range(self.chunks)]

    def unpack(
        self, chunks: list[npt.NDArray[np.complex128]]
    ) -> tuple[npt.NDArray[np.float64], float, float]:
        """Inverse of :meth:`pack` on a (decrypted) sum: ``(weighted_sum, total_weight, count)``."""
        if len(chunks) != self.chunks:
            raise InvalidParameter(f"expected {self.chunks} chunks, found {len(chunks)}")
        stream = np.concatenate([np.asarray(c, dtype=np.complex128) for c in chunks]).view(np.float64)
        return stream[: self.size].copy(), float(stream[self.size]), float(stream[self.size + 1])
