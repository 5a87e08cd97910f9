"""Feature and image codecs (torch-free): one interface, a stable id on the wire.

codec = make_codec(CodecId.FACTORIZED_ANS, tables=FactorizedTables.load("entropy.npz"))
payload = codec.encode(latent)        # Payload(codec, shape, strings)
latent2 = codec.decode(payload)       # validated against DecodeLimits first
"""

from __future__ import annotations

from shared.codecs.base import DEFAULT_LIMITS, Codec, CodecId, DecodeLimits, Payload
from shared.codecs.factorized import FactorizedAnsCodec, FactorizedTables
from shared.codecs.image import ImageCodec, decode_image
from shared.codecs.quantized import Fp16ZstdCodec, Uint8ZstdCodec
from shared.errors import CodecError


def make_codec(
    codec_id: CodecId | int,
    *,
    tables: FactorizedTables | None = None,
    quality: int = 90,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> Codec:
    """The codec for a wire id. The factorized codec needs the bundle's entropy tables."""
    try:
        codec_id = CodecId(codec_id)
    except ValueError:
        known = ", ".join(f"{c.value}={c.name}" for c in CodecId)
        raise CodecError(f"unknown codec id {codec_id}; known: {known}") from None
    if codec_id is CodecId.FACTORIZED_ANS:
        if tables is None:
            raise CodecError("the factorized codec needs the model's entropy tables")
        return FactorizedAnsCodec(tables, limits)
    if codec_id is CodecId.UINT8_ZSTD:
        return Uint8ZstdCodec(limits)
    if codec_id is CodecId.FP16_ZSTD:
        return Fp16ZstdCodec(limits)
    return ImageCodec(codec_id, quality, limits)


__all__ = [
    "DEFAULT_LIMITS",
    "Codec",
    "CodecError",
    "CodecId",
    "DecodeLimits",
    "FactorizedAnsCodec",
    "FactorizedTables",
    "Fp16ZstdCodec",
    "ImageCodec",
    "Payload",
    "Uint8ZstdCodec",
    "decode_image",
    "make_codec",
]
