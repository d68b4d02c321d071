"""Benchmarks of secagg against its anchors (Flower's SecAgg+, NVIDIA FLARE's CKKS recipe), of
DP fine-tuning and of whole rounds over the real server. An application, not part of the library:
it lives in the source checkout only (never in the wheel) and may import anything, the client
and server sides included. ``secagg bench ...`` reaches it through the ``secagg.commands`` entry
point that pyproject.toml registers (:mod:`benchmarks.commands`).
"""
