"""Hostile payloads (random bytes, truncation, absurd shapes, wrong ids) -> a typed error, fast."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.codecs import CodecError, CodecId, DecodeLimits, Payload, make_codec
from shared.errors import LimitExceeded
from tests.shared.factories import laplace_tables, trained_looking_latent

TABLES = laplace_tables(8)
LATENT_CODECS = [CodecId.FACTORIZED_ANS, CodecId.UINT8_ZSTD, CodecId.FP16_ZSTD]
IMAGE_IDS = (CodecId.JPEG, CodecId.WEBP, CodecId.PNG)
ALL_CODECS = [*LATENT_CODECS, CodecId.JPEG, CodecId.WEBP, CodecId.PNG]


def codec_for(codec_id: CodecId, limits: DecodeLimits | None = None):
    return make_codec(codec_id, tables=TABLES, limits=limits or DecodeLimits())


def valid_payload(codec_id: CodecId) -> Payload:
    if codec_id in IMAGE_IDS:
        image = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
        return codec_for(codec_id).encode(image)
    return codec_for(codec_id).encode(trained_looking_latent((8, 12, 16), outlier_share=0.02))


@pytest.mark.parametrize("codec_id", [c for c in ALL_CODECS if c is not CodecId.FACTORIZED_ANS])
@given(junk=st.lists(st.binary(max_size=512), min_size=0, max_size=3))
def test_random_bytes_give_codec_error(codec_id, junk) -> None:
    shape = (24, 32, 3) if codec_id in IMAGE_IDS else (8, 12, 16)
    with pytest.raises(CodecError):
        codec_for(codec_id).decode(Payload(codec_id, shape, tuple(junk)))


@given(junk=st.lists(st.binary(max_size=512), min_size=0, max_size=3))
def test_random_bytes_never_crash_the_entropy_decoder(junk) -> None:
    """An ANS stream has no redundancy: a few byte strings are valid encodings of *some* symbols
    (the empty stream is one). Anything else must be the typed error, never a crash."""
    codec = codec_for(CodecId.FACTORIZED_ANS)
    try:
        decoded = codec.decode(Payload(CodecId.FACTORIZED_ANS, (8, 12, 16), tuple(junk)))
    except CodecError:
        return
    assert decoded.shape == (8, 12, 16) and decoded.dtype == np.float32


def test_random_words_give_codec_error_for_the_entropy_decoder() -> None:
    rng = np.random.default_rng(0)
    codec = codec_for(CodecId.FACTORIZED_ANS)
    failures = 0
    for _ in range(200):
        junk = rng.integers(0, 256, size=4 * int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
        try:
            codec.decode(Payload(CodecId.FACTORIZED_ANS, (8, 12, 16), (junk, b"")))
        except CodecError:
            failures += 1
    assert failures == 200


@pytest.mark.parametrize("codec_id", ALL_CODECS)
def test_every_truncation_gives_codec_error(codec_id) -> None:
    payload = valid_payload(codec_id)
    codec = codec_for(codec_id)
    codec.decode(payload)  # the untouched payload decodes
    # A PNG decodes without its IEND chunk, the last CRC and the zlib checksum (20 bytes):
    # cut into the pixel data before them.
    main = payload.strings[0]
    end = len(main) - (20 if codec_id is CodecId.PNG else 0)
    for cut in sorted({0, 1, 3, 4, end // 2, end - 4, end - 1}):
        truncated = Payload(codec_id, payload.shape, (main[:cut], *payload.strings[1:]))
        with pytest.raises(CodecError):
            codec.decode(truncated)


def test_factorized_detects_missing_or_extra_escapes_and_wrong_shape() -> None:
    payload = valid_payload(CodecId.FACTORIZED_ANS)
    codec = codec_for(CodecId.FACTORIZED_ANS)
    words, escapes = payload.strings
    assert escapes, "the fixture must contain escapes"
    for bad_escapes in (escapes[:-4], escapes + b"\x01\x00\x00\x00"):
        with pytest.raises(CodecError, match="escape"):
            codec.decode(Payload(payload.codec, payload.shape, (words, bad_escapes)))
    with pytest.raises(CodecError):
        codec.decode(Payload(payload.codec, (8, 12, 8), payload.strings))
    with pytest.raises(CodecError, match="channels"):
        codec.decode(Payload(payload.codec, (9, 12, 16), payload.strings))


@pytest.mark.parametrize("codec_id", LATENT_CODECS)
@pytest.mark.parametrize(
    "shape",
    [(1_000_000, 1_000_000, 1_000_000), (8, 0, 16), (8, 12), (2**31, 1, 1), (8, 4096, 4096)],
)
def test_absurd_shapes_are_refused_before_allocation(codec_id, shape) -> None:
    payload = valid_payload(codec_id)
    started = time.perf_counter()
    with pytest.raises(CodecError):
        codec_for(codec_id).decode(Payload(codec_id, shape, payload.strings))
    assert time.perf_counter() - started < 1.0


def test_limits_are_configurable_and_typed() -> None:
    payload = valid_payload(CodecId.UINT8_ZSTD)
    tight = DecodeLimits(max_latent_elements=100)
    with pytest.raises(LimitExceeded, match="at most 100"):
        codec_for(CodecId.UINT8_ZSTD, tight).decode(payload)
    with pytest.raises(LimitExceeded):
        codec_for(CodecId.UINT8_ZSTD, DecodeLimits(max_payload_bytes=10)).decode(payload)


def test_zstd_bomb_declaring_a_huge_frame_is_refused() -> None:
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(bytes(64 * 1024 * 1024))  # tiny, inflates to 64 MiB
    assert len(bomb) < 10_000
    codec = codec_for(CodecId.FP16_ZSTD)
    with pytest.raises(CodecError, match="declares"):
        codec.decode(Payload(CodecId.FP16_ZSTD, (8, 12, 16), (bomb,)))


def test_image_larger_than_limit_is_refused_from_its_header() -> None:
    big = np.zeros((300, 400, 3), dtype=np.uint8)
    codec = make_codec(CodecId.JPEG, limits=DecodeLimits(max_image_pixels=100 * 100))
    payload = make_codec(CodecId.JPEG).encode(big)
    with pytest.raises(LimitExceeded, match="300"):
        codec.decode(payload)


def test_wrong_codec_id_and_unknown_ids() -> None:
    payload = valid_payload(CodecId.UINT8_ZSTD)
    with pytest.raises(CodecError, match="codec"):
        codec_for(CodecId.FP16_ZSTD).decode(payload)
    with pytest.raises(CodecError, match="unknown codec id 99"):
        make_codec(99)
    with pytest.raises(CodecError, match="entropy tables"):
        make_codec(CodecId.FACTORIZED_ANS)
    png_bytes = _png(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(CodecError, match="PNG"):
        codec_for(CodecId.JPEG).decode(Payload(CodecId.JPEG, (8, 8, 3), (png_bytes,)))


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
