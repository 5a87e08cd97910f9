"""The codec interface: `encode(array) -> Payload`, `decode(Payload) -> array`, a wire id.

A Payload is what crosses the link: the codec id, the shape the receiver must rebuild, and a list
of byte strings (as compressai's `compress()` returns them). Decoders validate the declared shape
against `DecodeLimits` *before* allocating anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from shared.errors import CodecError, LimitExceeded
from shared.wire import pb


class CodecId(IntEnum):
    """Wire ids, tied to the proto's `Codec` enum so the two cannot drift."""

    FACTORIZED_ANS = pb.CODEC_FACTORIZED_ANS
    UINT8_ZSTD = pb.CODEC_UINT8_ZSTD
    FP16_ZSTD = pb.CODEC_FP16_ZSTD
    JPEG = pb.CODEC_JPEG
    WEBP = pb.CODEC_WEBP
    PNG = pb.CODEC_PNG


@dataclass(frozen=True)
class Payload:
    codec: CodecId
    shape: tuple[int, ...]
    strings: tuple[bytes, ...] = field(repr=False)

    @property
    def nbytes(self) -> int:
        """Bytes of coded data (the wire adds a few bytes of framing per string)."""
        return sum(len(s) for s in self.strings)


@dataclass(frozen=True)
class DecodeLimits:
    """What a decoder accepts before it allocates. Defaults fit a 1333×800 frame split at stride 4
    with up to ~16 latent channels, and images up to 4096×4096."""

    max_latent_elements: int = 4 * 1024 * 1024
    max_latent_dim: int = 8192
    max_image_pixels: int = 4096 * 4096
    max_payload_bytes: int = 16 * 1024 * 1024
    max_strings: int = 4

    def check_payload(self, payload: Payload, expected: CodecId, rank: int) -> None:
        if payload.codec != expected:
            raise CodecError(
                f"payload has codec {payload.codec!r}, this decoder reads {expected!r}"
            )
        if len(payload.shape) != rank:
            raise CodecError(
                f"shape {payload.shape} has rank {len(payload.shape)}, expected {rank}"
            )
        if any(d <= 0 or d > self.max_latent_dim for d in payload.shape):
            raise LimitExceeded(
                f"shape {payload.shape}: every dimension must be in 1..{self.max_latent_dim}"
            )
        if len(payload.strings) > self.max_strings:
            raise LimitExceeded(f"{len(payload.strings)} byte strings, at most {self.max_strings}")
        if payload.nbytes > self.max_payload_bytes:
            raise LimitExceeded(f"{payload.nbytes} payload bytes, at most {self.max_payload_bytes}")

    def check_latent(self, payload: Payload, expected: CodecId) -> int:
        """Validate a (C, H, W) latent payload; return its element count."""
        self.check_payload(payload, expected, rank=3)
        elements = math.prod(payload.shape)
        if elements > self.max_latent_elements:
            raise LimitExceeded(
                f"latent {payload.shape} has {elements} elements, "
                f"at most {self.max_latent_elements}"
            )
        return elements


DEFAULT_LIMITS = DecodeLimits()


class Codec(Protocol):
    """What every codec offers. Implementations are immutable and safe to share across threads."""

    @property
    def codec_id(self) -> CodecId: ...

    def encode(self, array: npt.NDArray[np.generic]) -> Payload: ...

    def decode(self, payload: Payload) -> npt.NDArray[np.generic]: ...


_Scalar = TypeVar("_Scalar", bound=np.generic)


def as_chw(latent: np.ndarray[Any, np.dtype[_Scalar]]) -> np.ndarray[Any, np.dtype[_Scalar]]:
    """Accept (C, H, W) or (1, C, H, W); the wire carries one frame per payload."""
    if latent.ndim == 4 and latent.shape[0] == 1:
        return latent.reshape(latent.shape[1:])
    if latent.ndim != 3:
        raise CodecError(f"latent must be (C, H, W) or (1, C, H, W), got shape {latent.shape}")
    return latent


def expect_strings(payload: Payload, count: int) -> tuple[bytes, ...]:
    if len(payload.strings) != count:
        raise CodecError(
            f"{payload.codec.name} payload needs {count} byte string(s), got {len(payload.strings)}"
        )
    return payload.strings
