"""Bounded zstd: a decompressor that checks the frame's declared size before it allocates.

python-zstandard allocates a frame's declared content size whatever `max_output_size` says, so a
hostile header could ask for gigabytes; we read the header first.
"""

from __future__ import annotations

import threading

import zstandard

from shared.errors import CodecError

_local = threading.local()  # zstd contexts are not safe for concurrent use; one per thread


def _compressor() -> zstandard.ZstdCompressor:
    cctx = getattr(_local, "cctx", None)
    if cctx is None:
        cctx = _local.cctx = zstandard.ZstdCompressor(level=3, write_content_size=True)
    return cctx


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def compress(data: bytes) -> bytes:
    return bytes(_compressor().compress(data))


def decompress_exact(frame: bytes, size: int) -> bytes:
    """Decompress one zstd frame that must hold exactly `size` bytes."""
    try:
        declared = zstandard.get_frame_parameters(frame).content_size
    except zstandard.ZstdError as exc:
        raise CodecError(f"not a zstd frame: {exc}") from exc
    if declared != size:
        raise CodecError(f"zstd frame declares {declared} bytes, the shape needs {size}")
    try:
        out = _decompressor().decompress(frame, max_output_size=size, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CodecError(f"corrupt zstd frame: {exc}") from exc
    if len(out) != size:
        raise CodecError(f"zstd frame held {len(out)} bytes, the shape needs {size}")
    return bytes(out)
