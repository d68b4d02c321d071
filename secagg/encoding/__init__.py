"""Parameter dicts <-> vectors, clipping, fixed-point quantisation and bit-packing."""

from secagg.encoding.clipping import clip_l2, clip_linf
from secagg.encoding.packing import pack_bits, packed_size, unpack_bits
from secagg.encoding.paramspec import ParamSpec, TensorSpec
from secagg.encoding.quantize import FixedPoint, check_headroom, dequantize_sum, quantize

__all__ = [
    "FixedPoint",
    "ParamSpec",
    "TensorSpec",
    "check_headroom",
    "clip_l2",
    "clip_linf",
    "dequantize_sum",
    "pack_bits",
    "packed_size",
    "quantize",
    "unpack_bits",
]
