"""Safe release of a decrypted aggregate: round to the preset's grid before anything leaves.

An exact CKKS decryption reveals the encryption noise, and with the public ciphertext that
gives the secret key (Li and Micciancio, EUROCRYPT 2021). Rounding every released value to a
grid of ``2^-b`` (b = the preset's ``release_quantum_bits``, at least 8 bits coarser than the
encoding scale) replaces the exact noise with a rounding residual thousands of times larger
than it, which the server does not know. This is the heuristic defence; noise flooding with a
proven bound is the stronger one and is not implemented yet (see SECURITY.md).

Rounding is deterministic: every client that decrypts the same aggregate releases the same
bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secagg.errors import ProtocolAbort

__all__ = ["Release", "round_to_quantum"]


def round_to_quantum(values: npt.NDArray[np.float64], quantum: float) -> npt.NDArray[np.float64]:
    """Nearest multiple of ``quantum`` (a power of two, so the division is exact)."""
    out: npt.NDArray[np.float64] = np.rint(values / quantum) * quantum
    return out


@dataclass(frozen=True, slots=True, eq=False)
class Release:
    """The only thing a CKKS round lets out: rounded sums and who contributed."""

    weighted_sum: npt.NDArray[np.float64]
    total_weight: float
    contributors: tuple[int, ...]
    quantum: float

    def mean(self) -> npt.NDArray[np.float64]:
        """The weighted average ``sum(w_i x_i) / sum(w_i)``."""
        if self.total_weight <= 0:
            raise ProtocolAbort("release", f"total weight is {self.total_weight}, cannot average")
        out: npt.NDArray[np.float64] = self.weighted_sum / self.total_weight
        return out

    def to_bytes(self) -> bytes:
        """Canonical bytes (float64 little-endian sums, then the total weight)."""
        return (
            self.weighted_sum.astype("<f8").tobytes() + np.asarray([self.total_weight], dtype="<f8").tobytes()
        )


def make_release(
    weighted_sum: npt.NDArray[np.float64],
    total_weight: float,
    count: float,
    contributors: tuple[int, ...],
    quantum: float,
) -> Release:
    """Check the decrypted contributor count, then round everything to the grid."""
    if abs(count - len(contributors)) > 0.25:
        raise ProtocolAbort(
            "release",
            f"the aggregate decrypts to {count:.3f} contributions but claims "
            f"{len(contributors)}; it is not the sum of the listed uploads, nothing released",
        )
    rounded = round_to_quantum(weighted_sum, quantum)
    rounded.setflags(write=False)
    weight = float(round_to_quantum(np.asarray([total_weight]), quantum)[0])
    return Release(rounded, weight, contributors, quantum)
