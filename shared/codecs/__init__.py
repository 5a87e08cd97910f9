"""Feature and image codecs (torch-free): one interface, a stable id on the wire.

codec = make_codec(CodecId.FACTORIZED_ANS, tables=FactorizedTables.load("entropy.npz"))
codec_spec("JPEG").image_format        # the registry: wire id, name, image format, factory
payload = codec.encode(latent)        # Payload(codec, shape, strings)
latent2 = codec.decode(payload)       # validated against DecodeLimits first
"""

from __future__ import annotations

from shared.codecs.base import DEFAULT_LIMITS, Codec, CodecId, DecodeLimits, Payload
from shared.codecs.factorized import (
    FactorizedAnsCodec,
    FactorizedTables,
    KeptPositions,
    Regions,
    kept_positions,
)
from shared.codecs.image import DEFAULT_QUALITY, ImageCodec, decode_image
from shared.codecs.quantized import Fp16ZstdCodec, Uint8ZstdCodec
from shared.codecs.registry import (
    CODECS,
    IMAGE_CODECS,
    MEDIA_TYPES,
    CodecSpec,
    codec_spec,
    make_codec,
)
from shared.errors import CodecError

__all__ = [
    "CODECS",
    "DEFAULT_LIMITS",
    "DEFAULT_QUALITY",
    "IMAGE_CODECS",
    "MEDIA_TYPES",
    "Codec",
    "CodecError",
    "CodecId",
    "CodecSpec",
    "DecodeLimits",
    "FactorizedAnsCodec",
    "FactorizedTables",
    "Fp16ZstdCodec",
    "ImageCodec",
    "KeptPositions",
    "Payload",
    "Regions",
    "Uint8ZstdCodec",
    "codec_spec",
    "decode_image",
    "kept_positions",
    "make_codec",
]
