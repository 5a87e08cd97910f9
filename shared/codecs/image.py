"""Whole-frame codecs for the full-offload branch: JPEG, WebP, PNG (RGB, uint8, H × W × 3).

Pillow reads the header first, so the declared size is checked against the limits before any
pixel is decoded (its own decompression-bomb check is a second net).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from shared.codecs.base import DEFAULT_LIMITS, CodecId, DecodeLimits, Payload, expect_strings
from shared.errors import CodecError, LimitExceeded

# Pillow's names; the registry (shared/codecs/registry.py) reads them from here.
FORMATS = {CodecId.JPEG: "JPEG", CodecId.WEBP: "WEBP", CodecId.PNG: "PNG"}
DEFAULT_QUALITY = 90  # an image branch that names no quality (bundles before the field)
_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}  # Pillow's `subsampling` values


@dataclass(frozen=True)
class ImageCodec:
    """JPEG or WebP at a given quality (1..100), or PNG (lossless; quality ignored). RGB.

    `chroma` is JPEG's chroma subsampling: "4:2:0" (Pillow's default, the smallest files) or
    "4:4:4" (full-resolution colour: more bytes, sharper colour edges). Decoders read either."""

    codec_id: CodecId = CodecId.JPEG
    quality: int = DEFAULT_QUALITY
    limits: DecodeLimits = DEFAULT_LIMITS
    chroma: str = "4:2:0"

    def __post_init__(self) -> None:
        if self.codec_id not in FORMATS:
            raise ValueError(f"ImageCodec codes {sorted(FORMATS)}, not {self.codec_id!r}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")
        if self.chroma not in _SUBSAMPLING:
            raise ValueError(f"chroma must be one of {sorted(_SUBSAMPLING)}, got {self.chroma!r}")

    def encode(self, array: npt.NDArray[np.generic]) -> Payload:
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise CodecError(
                f"an image must be uint8 (H, W, 3) RGB, got {array.dtype} {array.shape}"
            )
        buffer = io.BytesIO()
        jpeg = self.codec_id is CodecId.JPEG
        options = {"subsampling": _SUBSAMPLING[self.chroma]} if jpeg else {}
        Image.fromarray(array, "RGB").save(
            buffer, format=FORMATS[self.codec_id], quality=self.quality, **options
        )
        return Payload(self.codec_id, tuple(int(d) for d in array.shape), (buffer.getvalue(),))

    def decode(self, payload: Payload) -> npt.NDArray[np.uint8]:
        if payload.codec != self.codec_id:
            raise CodecError(
                f"payload has codec {payload.codec!r}, this decoder reads {self.codec_id!r}"
            )
        (data,) = expect_strings(payload, 1)
        if len(data) > self.limits.max_payload_bytes:
            raise LimitExceeded(f"{len(data)} image bytes, at most {self.limits.max_payload_bytes}")
        return decode_image(data, FORMATS[self.codec_id], self.limits, payload.shape or None)


def decode_image(
    data: bytes,
    expected_format: str | None,
    limits: DecodeLimits = DEFAULT_LIMITS,
    shape: tuple[int, ...] | None = None,
) -> npt.NDArray[np.uint8]:
    """Decode JPEG/WebP/PNG bytes to RGB, checking the header before the pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise LimitExceeded(
                    f"image of {width}×{height} pixels, at most {limits.max_image_pixels} pixels"
                )
            if expected_format is not None and image.format != expected_format:
                raise CodecError(f"bytes hold a {image.format} image, expected {expected_format}")
            if shape is not None and tuple(shape) != (height, width, 3):
                raise CodecError(f"image is {height}×{width}, the request declares {shape}")
            # A writable array (np.array copies): consumers such as torch refuse read-only memory.
            pixels = np.array(image.convert("RGB"), dtype=np.uint8)
    except CodecError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Warning) as exc:
        raise CodecError(f"cannot decode image: {exc}") from exc
    return pixels
