"""Baseline latent codecs: uint8 affine quantization + zstd (hnd-ghnd style) and float16 + zstd.

uint8 layout: strings[0] = 8-byte header (float32 minimum, float32 scale, little endian) + a zstd
frame of C·H·W bytes. float16 layout: strings[0] = a zstd frame of C·H·W little-endian halves.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.codecs import zstd_frames
from shared.codecs.base import (
    DEFAULT_LIMITS,
    CodecId,
    DecodeLimits,
    Payload,
    as_chw,
    expect_strings,
)
from shared.errors import CodecError

_HEADER = struct.Struct("<ff")


@dataclass(frozen=True)
class Uint8ZstdCodec:
    """Per-tensor affine quantization to 256 levels, then zstd."""

    limits: DecodeLimits = DEFAULT_LIMITS
    codec_id: CodecId = CodecId.UINT8_ZSTD

    def encode(self, array: npt.NDArray[np.generic]) -> Payload:
        latent = as_chw(np.asarray(array, dtype=np.float32))
        lo, hi = float(latent.min()), float(latent.max())
        # in float32, as the header stores it and the division runs: a range of a few denormals
        # (0 and 1e-45) has no float32 step of 1/255 of it, and would divide by zero
        scale = np.float32((hi - lo) / 255.0)
        if not scale > 0:
            scale = np.float32(1.0)  # one level: the error is the range itself, below any step
        levels = np.rint((latent - lo) / scale).clip(0, 255).astype(np.uint8)
        data = _HEADER.pack(lo, scale) + zstd_frames.compress(levels.tobytes())
        return Payload(self.codec_id, tuple(int(d) for d in latent.shape), (data,))

    def decode(self, payload: Payload) -> npt.NDArray[np.float32]:
        elements = self.limits.check_latent(payload, self.codec_id)
        (data,) = expect_strings(payload, 1)
        if len(data) < _HEADER.size:
            raise CodecError(f"uint8 payload of {len(data)} bytes is shorter than its header")
        lo, scale = _HEADER.unpack_from(data)
        if not (math.isfinite(lo) and math.isfinite(scale)) or scale <= 0:
            raise CodecError(f"uint8 header holds minimum {lo} and scale {scale}: not usable")
        raw = zstd_frames.decompress_exact(data[_HEADER.size :], elements)
        levels = np.frombuffer(raw, dtype=np.uint8).reshape(payload.shape)
        return (levels.astype(np.float32) * np.float32(scale) + np.float32(lo)).astype(np.float32)


@dataclass(frozen=True)
class Fp16ZstdCodec:
    """Half precision, then zstd: near lossless, for debugging and as an upper bound."""

    limits: DecodeLimits = DEFAULT_LIMITS
    codec_id: CodecId = CodecId.FP16_ZSTD

    def encode(self, array: npt.NDArray[np.generic]) -> Payload:
        latent = as_chw(np.asarray(array))
        halves = np.ascontiguousarray(latent, dtype="<f2")
        data = zstd_frames.compress(halves.tobytes())
        return Payload(self.codec_id, tuple(int(d) for d in latent.shape), (data,))

    def decode(self, payload: Payload) -> npt.NDArray[np.float32]:
        elements = self.limits.check_latent(payload, self.codec_id)
        (data,) = expect_strings(payload, 1)
        raw = zstd_frames.decompress_exact(data, elements * 2)
        return np.frombuffer(raw, dtype="<f2").reshape(payload.shape).astype(np.float32)
