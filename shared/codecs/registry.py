"""The codec registry: one row per wire id — its name, what it carries, its image format, and
how to build it. Every lookup by id, by manifest name or by media type goes through here.

    spec = codec_spec("FACTORIZED_ANS")       # or CodecId.FACTORIZED_ANS, or 1
    codec = spec.make(tables=tables, limits=limits)
    codec_spec(media_type="image/jpeg").id    # CodecId.JPEG

Names are `CodecId` names: what a manifest's `branch.codec` and the proto's `CODEC_<name>` say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.codecs.base import DEFAULT_LIMITS, Codec, CodecId, DecodeLimits
from shared.codecs.factorized import FactorizedAnsCodec, FactorizedTables
from shared.codecs.image import FORMATS, ImageCodec
from shared.codecs.quantized import Fp16ZstdCodec, Uint8ZstdCodec
from shared.errors import CodecError

Carries = Literal["latent", "image"]


@dataclass(frozen=True)
class CodecSpec:
    id: CodecId
    carries: Carries
    media_type: str | None = None  # the HTTP Content-Type of an upload in this codec

    @property
    def name(self) -> str:
        return self.id.name

    @property
    def image_format(self) -> str | None:
        """Pillow's format name, for whole-frame codecs."""
        return FORMATS.get(self.id)

    def make(
        self,
        *,
        tables: FactorizedTables | None = None,
        quality: int = 90,
        limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> Codec:
        """The codec. The factorized one needs the bundle's entropy tables."""
        if self.id is CodecId.FACTORIZED_ANS:
            if tables is None:
                raise CodecError("the factorized codec needs the model's entropy tables")
            return FactorizedAnsCodec(tables, limits)
        if self.id is CodecId.UINT8_ZSTD:
            return Uint8ZstdCodec(limits)
        if self.id is CodecId.FP16_ZSTD:
            return Fp16ZstdCodec(limits)
        return ImageCodec(self.id, quality, limits)


CODECS: dict[CodecId, CodecSpec] = {
    spec.id: spec
    for spec in (
        CodecSpec(CodecId.FACTORIZED_ANS, "latent"),
        CodecSpec(CodecId.UINT8_ZSTD, "latent"),
        CodecSpec(CodecId.FP16_ZSTD, "latent"),
        CodecSpec(CodecId.JPEG, "image", "image/jpeg"),
        CodecSpec(CodecId.WEBP, "image", "image/webp"),
        CodecSpec(CodecId.PNG, "image", "image/png"),
    )
}
IMAGE_CODECS = tuple(s.id for s in CODECS.values() if s.carries == "image")
MEDIA_TYPES = {s.media_type: s.id for s in CODECS.values() if s.media_type}


def codec_spec(key: CodecId | int | str) -> CodecSpec:
    """The registry's row for a wire id or a name (`JPEG`, `CODEC_JPEG`); CodecError if none."""
    try:
        if isinstance(key, str):
            codec_id = CodecId[key.upper().removeprefix("CODEC_")]
        else:
            codec_id = CodecId(key)
    except (KeyError, ValueError):
        known = ", ".join(f"{c.value}={c.name}" for c in CodecId)
        what = f"name {key!r}" if isinstance(key, str) else f"id {key}"
        raise CodecError(f"unknown codec {what}; known: {known}") from None
    return CODECS[codec_id]


def make_codec(
    codec_id: CodecId | int | str,
    *,
    tables: FactorizedTables | None = None,
    quality: int = 90,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> Codec:
    """The codec for a wire id or name. The factorized codec needs the bundle's entropy tables."""
    return codec_spec(codec_id).make(tables=tables, quality=quality, limits=limits)
