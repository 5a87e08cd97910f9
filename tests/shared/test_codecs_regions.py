"""Regions of interest: only the set cells' symbols cross the link; the rest decode as the
channel medians. Malformed region strings are a typed error."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shared.codecs import (
    CodecError,
    CodecId,
    FactorizedAnsCodec,
    FactorizedTables,
    Payload,
    Regions,
    kept_positions,
)
from shared.errors import TablesError
from tests.shared.factories import laplace_tables, trained_looking_latent

TABLES = laplace_tables(8)
ANS = FactorizedAnsCodec(TABLES)


def grid(height: int, width: int, cell: int) -> tuple[int, int]:
    return -(-height // cell), -(-width // cell)


@given(shape=st.tuples(st.integers(1, 8), st.integers(1, 13), st.integers(1, 13)),
       cell=st.integers(1, 5), data=st.data())
def test_set_cells_round_trip_and_the_rest_decode_as_medians(shape, cell, data) -> None:
    _, height, width = shape
    symbols = data.draw(hnp.arrays(np.int32, shape, elements=st.one_of(
        st.integers(-15, 15), st.integers(-(2**20), 2**20))))  # escapes inside regions too
    cells = data.draw(hnp.arrays(np.bool_, grid(height, width, cell)))
    regions = Regions(cells, cell)
    payload = ANS.encode_symbols(symbols, regions)
    decoded = ANS.decode_symbols(payload)
    kept = np.repeat(np.repeat(cells, cell, 0), cell, 1)[:height, :width]
    np.testing.assert_array_equal(decoded[:, kept], symbols[:, kept])
    assert not decoded[:, ~kept].any()  # symbol 0: the median
    assert np.array_equal(Regions.from_bytes(payload.strings[2], height, width).cells, cells)


def test_fewer_cells_cost_fewer_bytes_and_no_cell_costs_no_words() -> None:
    latent = trained_looking_latent((8, 16, 20), seed=1)
    rows, cols = grid(16, 20, 4)
    full = ANS.encode(latent)
    third = np.zeros((rows, cols), bool)
    third[:, : cols // 3 + 1] = True
    some = ANS.encode(latent, Regions(third, 4))
    none = ANS.encode(latent, Regions(np.zeros((rows, cols), bool), 4))
    assert none.nbytes < some.nbytes < 0.6 * full.nbytes
    assert none.strings[0] == b""
    np.testing.assert_array_equal(ANS.decode(none), np.broadcast_to(
        TABLES.medians[:, None, None], (8, 16, 20)))
    every = ANS.encode(latent, Regions(np.ones((rows, cols), bool), 4))
    np.testing.assert_array_equal(ANS.decode(every), ANS.decode(full))


def test_the_python_and_native_coders_write_the_same_regions_payload() -> None:
    latent = trained_looking_latent((8, 12, 16), seed=2, outlier_share=0.02)
    cells = np.random.default_rng(0).random(grid(12, 16, 2)) < 0.4
    regions = Regions(cells, 2)
    python = FactorizedAnsCodec(TABLES, backend="python").encode(latent, regions)
    native = FactorizedAnsCodec(TABLES).encode(latent, regions)
    assert python.strings == native.strings
    np.testing.assert_array_equal(FactorizedAnsCodec(TABLES, backend="python").decode(native),
                                  ANS.decode(python))


def test_a_grid_that_does_not_fit_the_latent_is_refused_when_encoding() -> None:
    latent = trained_looking_latent((8, 12, 16))
    with pytest.raises(CodecError, match="grid"):
        ANS.encode(latent, Regions(np.ones((2, 2), bool), 4))  # needs 3 x 4
    with pytest.raises(CodecError, match="cell"):
        ANS.encode(latent, Regions(np.ones((1, 1), bool), 300))


@pytest.mark.parametrize("regions, match", [
    (b"", "cell size"),
    (b"\x00\xff\xff", "cell size"),
    (b"\x04\xff", "take 3 bytes"),  # a 12x16 latent at cell 4: 3x4 = 12 bits, 2 bytes
    (b"\x04\xff\xff\xff", "take 3 bytes"),
    (b"\x04\xff\xff", "padding"),  # bits 13..16 set
])
def test_malformed_region_strings_are_a_codec_error(regions: bytes, match: str) -> None:
    good = ANS.encode(trained_looking_latent((8, 12, 16)), Regions(np.ones((3, 4), bool), 4))
    with pytest.raises(CodecError, match=match):
        ANS.decode(Payload(CodecId.FACTORIZED_ANS, (8, 12, 16),
                           (good.strings[0], good.strings[1], regions)))


def test_words_with_no_cell_set_are_a_codec_error() -> None:
    latent = trained_looking_latent((8, 12, 16))
    words = ANS.encode(latent).strings[0]
    with pytest.raises(CodecError, match="no region"):
        ANS.decode(Payload(CodecId.FACTORIZED_ANS, (8, 12, 16),
                           (words, b"", Regions(np.zeros((3, 4), bool), 4).to_bytes())))


def _kept_symbols(latent: np.ndarray, regions: Regions) -> np.ndarray:
    flat = ANS.quantize(latent).reshape(latent.shape[0], -1)
    return flat[:, regions.positions(*latent.shape[1:])]


def test_region_tables_code_the_kept_positions_in_fewer_bytes_and_decode_the_same(
        tmp_path) -> None:
    """CDFs refit on what the regions keep (wider than the prior here) code those positions
    shorter, decode to the same latent, survive save/load, and leave every payload without
    regions, and every channel count without a fit, to the prior."""
    latent = trained_looking_latent((8, 16, 20), seed=3) * 3  # spread wider than the prior
    cells = np.random.default_rng(1).random(grid(16, 20, 4)) < 0.5
    regions = Regions(cells, 4)
    fitted = TABLES.with_region_cdfs({8: _kept_symbols(latent, regions)})
    fitted.save(tmp_path / "entropy.npz")
    loaded = FactorizedTables.load(tmp_path / "entropy.npz")
    assert set(loaded.region_cdfs) == {8}
    np.testing.assert_array_equal(loaded.region_cdfs[8], fitted.region_cdfs[8])
    refit = FactorizedAnsCodec(loaded)
    prior, better = ANS.encode(latent, regions), refit.encode(latent, regions)
    assert better.nbytes < 0.9 * prior.nbytes
    np.testing.assert_array_equal(refit.decode(better), ANS.decode(prior))
    assert refit.encode(latent).strings == ANS.encode(latent).strings  # no regions: the prior
    four = latent[:4]  # no fit for 4 channels: the prior
    assert refit.encode(four, regions).strings == ANS.encode(four, regions).strings
    python = FactorizedAnsCodec(loaded, backend="python")
    assert python.encode(latent, regions).strings == better.strings
    np.testing.assert_array_equal(python.decode(better), refit.decode(better))


def test_a_symbol_the_fit_never_saw_still_codes() -> None:
    """Every entry keeps at least one count in 2**16, the overflow entry too: a fit on symbols
    all at the median still codes the table's edge and an escape."""
    fitted = FactorizedAnsCodec(TABLES.with_region_cdfs({8: np.zeros((8, 500), np.int32)}))
    symbols = np.zeros((8, 4, 4), np.int32)
    symbols[:, 0, 0], symbols[:, 1, 1] = -12, 10**6  # the table's lowest symbol, an escape
    regions = Regions(np.ones((1, 1), bool), 4)
    np.testing.assert_array_equal(
        fitted.decode_symbols(fitted.encode_symbols(symbols, regions)), symbols)


def test_region_tables_that_do_not_fit_the_prior_are_refused() -> None:
    good = TABLES.with_region_cdfs({4: np.zeros((4, 10), np.int32)}).region_cdfs[4]
    for bad, match in ((good[:3], r"region CDFs for 4"), (np.zeros_like(good), "rise strictly")):
        with pytest.raises(TablesError, match=match):
            dataclasses.replace(TABLES, region_cdfs={4: bad})
    with pytest.raises(TablesError, match="region CDFs for 9"):
        dataclasses.replace(TABLES, region_cdfs={9: np.zeros((9, good.shape[1]), np.int32)})


def test_a_regions_string_is_parsed_once_for_its_check_and_its_decode() -> None:
    # The edge checks a payload's plausibility, then decodes it: one parse serves both.
    from shared.codecs.factorized import _kept_positions

    cells = np.random.default_rng(3).random(grid(12, 16, 2)) < 0.5
    data = Regions(cells, 2).to_bytes()
    _kept_positions.cache_clear()
    first = kept_positions(bytearray(data), 12, 16)  # any bytes-like, keyed by content
    payload = ANS.encode(trained_looking_latent((8, 12, 16), seed=4), Regions(cells, 2))
    ANS.decode(payload)
    info = _kept_positions.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert first.cell == 2 and first.count == int(first.mask.sum()) == int(
        Regions(cells, 2).positions(12, 16).sum())
    with pytest.raises(ValueError, match="read-only"):
        first.mask[0] = not first.mask[0]  # shared by every caller: nobody may edit it
    with pytest.raises(CodecError, match="take 7 bytes"):
        kept_positions(data[:-1], 12, 16)
    assert _kept_positions.cache_info().currsize == 1  # a malformed string is never kept
