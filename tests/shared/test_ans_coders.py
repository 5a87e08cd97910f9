"""The pure-Python ANS coder writes constriction's bitstream word for word, and reads it back.

The device installs constriction where its wheel exists and falls back to the Python coder on
aarch64 Linux; the edge decodes with whichever it has. These tests are what lets both share one
codec id on the wire.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shared.codecs import FactorizedAnsCodec, FactorizedTables
from shared.codecs.ans import constriction_available
from shared.errors import CodecError
from tests.shared.factories import laplace_tables, trained_looking_latent

DEMO_TABLES = Path(__file__).resolve().parents[2] / "bundles" / "demo-shapes" / "entropy.npz"
TABLES = laplace_tables(8)
PYTHON = FactorizedAnsCodec(TABLES, backend="python")

needs_constriction = pytest.mark.skipif(
    not constriction_available(), reason="constriction has no wheel for this platform"
)


def _symbols(data: st.DataObject, shape: tuple[int, int, int]) -> np.ndarray:
    return data.draw(
        hnp.arrays(
            np.int32,
            shape,
            elements=st.one_of(st.integers(-15, 15), st.integers(-(2**31), 2**31 - 1)),
        )
    )


@given(shape=st.tuples(st.integers(1, 8), st.integers(1, 9), st.integers(1, 9)), data=st.data())
def test_python_coder_roundtrips_symbols_with_outliers(shape, data) -> None:
    symbols = _symbols(data, shape)
    np.testing.assert_array_equal(PYTHON.decode_symbols(PYTHON.encode_symbols(symbols)), symbols)


@needs_constriction
@settings(max_examples=60)
@given(shape=st.tuples(st.integers(1, 8), st.integers(1, 9), st.integers(1, 9)), data=st.data())
def test_python_and_constriction_write_the_same_words(shape, data) -> None:
    rust = FactorizedAnsCodec(TABLES, backend="constriction")
    symbols = _symbols(data, shape)
    ours, theirs = PYTHON.encode_symbols(symbols), rust.encode_symbols(symbols)
    assert ours.strings == theirs.strings
    np.testing.assert_array_equal(rust.decode_symbols(ours), symbols)
    np.testing.assert_array_equal(PYTHON.decode_symbols(theirs), symbols)


@needs_constriction
def test_same_words_on_the_shipped_tables_at_every_width() -> None:
    tables = FactorizedTables.load(DEMO_TABLES)
    python = FactorizedAnsCodec(tables, backend="python")
    rust = FactorizedAnsCodec(tables, backend="constriction")
    for channels in (3, 6, 9, 12):
        latent = trained_looking_latent((channels, 30, 40), seed=channels) * 0.3
        ours, theirs = python.encode(latent), rust.encode(latent)
        assert ours.strings == theirs.strings
        np.testing.assert_array_equal(python.decode(theirs), rust.decode(ours))


def test_model_is_the_table_exactly_so_bytes_track_the_ideal() -> None:
    # Highly skewed symbols: an exact model pays ≈ the ideal size plus the flushed state.
    tables = laplace_tables(4, scales=(0.3, 0.3))
    codec = FactorizedAnsCodec(tables, backend="python")
    symbols = np.zeros((4, 30, 40), dtype=np.int32)
    probability = np.diff(tables.quantized_cdf[:, :], axis=1)[:, 12] / 65536
    ideal_bytes = -np.log2(probability).sum() * 1200 / 8
    payload = codec.encode_symbols(symbols)
    assert len(payload.strings[0]) <= ideal_bytes + 8


@pytest.mark.parametrize(
    "backend", ["python", pytest.param("constriction", marks=needs_constriction)]
)
def test_corrupt_words_are_a_codec_error(backend) -> None:
    codec = FactorizedAnsCodec(TABLES, backend=backend)
    payload = codec.encode(trained_looking_latent((4, 6, 6)))
    words = payload.strings[0]
    for bad in (words + b"\x00\x00\x00\x00", words + b"\x01\x00\x00\x00", words[:-4]):
        broken = type(payload)(payload.codec, payload.shape, (bad, payload.strings[1]))
        with pytest.raises(CodecError):
            codec.decode(broken)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(CodecError, match="unknown ANS backend"):
        FactorizedAnsCodec(TABLES, backend="fortran")  # type: ignore[arg-type]
