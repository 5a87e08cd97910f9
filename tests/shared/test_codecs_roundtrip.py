"""Every codec round-trips; entropy coding of symbols is lossless, outliers included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shared.codecs import CodecId, FactorizedAnsCodec, ImageCodec, make_codec
from tests.shared.factories import laplace_tables, trained_looking_latent

TABLES = laplace_tables(8)
ANS = FactorizedAnsCodec(TABLES)

shapes = st.tuples(st.integers(1, 8), st.integers(1, 12), st.integers(1, 12))


@given(
    shape=shapes,
    data=st.data(),
)
def test_factorized_symbols_roundtrip_losslessly_with_outliers(shape, data) -> None:
    symbols = data.draw(
        hnp.arrays(
            np.int32,
            shape,
            elements=st.one_of(
                st.integers(-15, 15),  # mostly in the table
                st.integers(-(2**31), 2**31 - 1),  # anything, far outside the table
            ),
        )
    )
    payload = ANS.encode_symbols(symbols)
    assert payload.shape == shape
    np.testing.assert_array_equal(ANS.decode_symbols(payload), symbols)


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_factorized_latent_roundtrip_is_quantization_around_medians(shape, seed) -> None:
    latent = trained_looking_latent(shape, seed=seed, outlier_share=0.01)
    decoded = ANS.decode(ANS.encode(latent))
    medians = TABLES.medians[: shape[0], None, None]
    np.testing.assert_array_equal(decoded, np.rint(latent - medians) + medians)
    assert np.abs(decoded - latent).max() <= 0.5 + 1e-3


def test_factorized_accepts_batch_of_one_and_a_channel_prefix() -> None:
    latent = trained_looking_latent((3, 5, 7))
    payload = ANS.encode(latent[None])
    assert payload.shape == (3, 5, 7)  # fewer channels than the tables: the first 3 tables
    assert ANS.decode(payload).shape == (3, 5, 7)


def test_factorized_bytes_fall_with_fewer_channels_and_escapes_cost_bytes() -> None:
    latent = np.clip(trained_looking_latent((8, 16, 16), seed=3), -10, 10)
    full = ANS.encode(latent)
    half = ANS.encode(latent[:4])
    assert half.nbytes < full.nbytes
    assert full.strings[1] == b""  # no symbol outside the tables' ±12
    spiky = latent.copy()
    spiky[0, 0, 0] = 1e4
    assert 1 <= len(ANS.encode(spiky).strings[1]) <= 3  # one escape, a 3-byte varint


@given(latent=hnp.arrays(np.float32, shapes, elements=st.floats(-1e3, 1e3, width=32)))
@example(latent=np.array([[[0.0, 1e-45]]], np.float32))  # a range with no float32 step: found by CI
@pytest.mark.parametrize("codec_id", [CodecId.UINT8_ZSTD, CodecId.FP16_ZSTD])
def test_baseline_latent_codecs_roundtrip_within_their_step(codec_id, latent) -> None:
    codec = make_codec(codec_id)
    decoded = codec.decode(codec.encode(latent))
    assert decoded.shape == latent.shape and decoded.dtype == np.float32
    if codec_id is CodecId.UINT8_ZSTD:
        step = (float(latent.max()) - float(latent.min())) / 255.0
        tolerance = step / 2 + 1e-3 * max(1.0, float(np.abs(latent).max()))
    else:
        tolerance = np.abs(latent).astype(np.float64) * 2**-10 + 1e-4
    assert np.all(np.abs(decoded.astype(np.float64) - latent) <= tolerance)


@given(
    image=hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40), st.just(3))),
    codec_id=st.sampled_from([CodecId.JPEG, CodecId.WEBP, CodecId.PNG]),
)
def test_image_codecs_roundtrip_shape(image, codec_id) -> None:
    codec = ImageCodec(codec_id, quality=95)
    decoded = codec.decode(codec.encode(image))
    assert decoded.shape == image.shape and decoded.dtype == np.uint8


def test_image_codec_quality_trades_bytes_for_fidelity() -> None:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 96 * 128).reshape(96, 128).astype(np.uint8)
    image = np.stack([ramp, ramp[::-1], ramp], axis=2)
    image = np.clip(image + rng.integers(0, 8, image.shape), 0, 255).astype(np.uint8)
    for codec_id in (CodecId.JPEG, CodecId.WEBP):
        low, high = ImageCodec(codec_id, quality=20), ImageCodec(codec_id, quality=95)
        p_low, p_high = low.encode(image), high.encode(image)
        assert p_low.nbytes < p_high.nbytes
        err_low = np.abs(low.decode(p_low).astype(int) - image).mean()
        err_high = np.abs(high.decode(p_high).astype(int) - image).mean()
        assert err_high < err_low


def test_jpeg_full_chroma_keeps_colour_edges_for_more_bytes() -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, ::2] = (255, 0, 0)  # one-pixel red / black stripes: 4:2:0 smears the red
    sub, full = ImageCodec(CodecId.JPEG, 90), ImageCodec(CodecId.JPEG, 90, chroma="4:4:4")
    p_sub, p_full = sub.encode(image), full.encode(image)
    assert p_sub.nbytes < p_full.nbytes
    err_sub = np.abs(sub.decode(p_sub).astype(int) - image).mean()
    err_full = np.abs(full.decode(p_full).astype(int) - image).mean()
    assert err_full < err_sub
    with pytest.raises(ValueError, match="chroma"):
        ImageCodec(CodecId.JPEG, 90, chroma="4:1:1")


@given(st.lists(st.integers(0, 2**35 - 1), max_size=50))
def test_escape_varints_roundtrip(values) -> None:
    from shared.codecs import varint

    array = np.array(values, dtype=np.uint64)
    np.testing.assert_array_equal(varint.decode(varint.encode(array), len(values)), array)
    assert len(varint.encode(np.array([0, 127], np.uint64))) == 2  # small distances: one byte
