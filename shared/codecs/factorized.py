"""Entropy coding of a quantized latent with a learned factorized prior (Entropic Student).

Torch-free.

The prior's tables are what compressai's `EntropyBottleneck.update()` leaves behind —
`_quantized_cdf` (C × L, 16-bit precision), `_cdf_length`, `_offset` — plus the channel medians;
they are exported once to an `.npz` (see `FactorizedTables`). Quantization is compressai's:
`symbol = round(latent - median)`, `latent' = symbol + median`.

Coding is ANS with each channel's table as its exact model (`shared.codecs.ans`): constriction's
Rust coder where its wheel installs, a bit-identical pure-Python coder where it does not (aarch64
Linux: Raspberry Pi, Jetson). Either decodes what the other wrote, so the wire has one codec id.
compressai's C++ rANS is no option: its package imports torch (`benchmarks/codecs.py` measures all
three). The models are built once per codec, not per frame.

Escapes: a symbol whose table index falls outside the table (index < 0 or ≥ pmf_length) is coded
as the table's last ("overflow") entry, and its distance beyond the table's edge goes to a second
byte string as a varint (even: above the table, odd: below). So outliers round-trip exactly instead
of being clipped, and a near miss costs one byte, not four.

Regions of interest: a frame may carry only some cells of its latent (`Regions`: a grid of
`cell` × `cell` latent positions, set where the bundle's region head sees an object). Only the
set cells' symbols are coded; every other position decodes as symbol 0, the channel's median:
"nothing here" as the prior's most likely value. The background is most of a frame and cost ~70 %
of its bytes (`benchmarks/latent_bits.py`), and the tails never needed it.

Region tables: the prior was learnt on every position, the background's mostly; the positions a
region head keeps hold objects and are spread wider. `FactorizedTables.region_cdfs` holds, per
channel count (one per width: a width's channel i is not another width's), CDFs refit on the
kept positions of training frames over the same support (offset, length, medians: symbols and
escapes are unchanged, only their probabilities move). A payload with regions is coded with its
channel count's region CDFs when the tables have them, with the prior's otherwise.

Wire layout: strings[0] = ANS words (uint32, little endian); strings[1] = escaped symbols;
strings[2], only with regions: one byte `cell`, then the grid's bits row-major (numpy packbits,
big-endian bit order, zero padding). Its grid is ceil(H / cell) × ceil(W / cell).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.codecs import varint
from shared.codecs.ans import AnsCoder, Backend, Frequencies, make_ans
from shared.codecs.base import (
    DEFAULT_LIMITS,
    CodecId,
    DecodeLimits,
    Payload,
    as_chw,
    expect_strings,
)
from shared.errors import CodecError, TablesError

TABLE_KEYS = ("quantized_cdf", "cdf_length", "offset", "medians")
REGION_CDF_KEY = "region_cdf_"  # + the channel count


@dataclass(frozen=True, eq=False)
class FactorizedTables:
    """Per-channel quantized CDFs of a factorized prior, as compressai's EntropyBottleneck has."""

    quantized_cdf: npt.NDArray[np.int32]  # (C, L): cdf[c, :cdf_length[c]] rises 0 .. 2**precision
    cdf_length: npt.NDArray[np.int32]  # (C,): pmf_length + 2 (the overflow entry and the leading 0)
    offset: npt.NDArray[np.int32]  # (C,): the symbol value of table index 0
    medians: npt.NDArray[np.float32]  # (C,): quantization centres
    precision: int = 16
    # channel count k → (k, L): CDFs for positions inside regions, on the same support
    region_cdfs: Mapping[int, npt.NDArray[np.int32]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cdf, length = self.quantized_cdf, self.cdf_length
        channels = cdf.shape[0] if cdf.ndim == 2 else -1
        if channels < 1 or any(a.shape != (channels,) for a in (length, self.offset, self.medians)):
            raise TablesError(
                "tables must be quantized_cdf (C, L) with cdf_length, offset, medians of shape "
                "(C,); "
                f"got {cdf.shape}, {length.shape}, {self.offset.shape}, {self.medians.shape}"
            )
        if length.min() < 3 or length.max() > cdf.shape[1]:
            raise TablesError(
                f"cdf_length must be in 3..{cdf.shape[1]}, got {length.min()}..{length.max()}"
            )
        self._check_rows(cdf, "")
        for count, rows in self.region_cdfs.items():
            if not 1 <= count <= channels or rows.shape != (count, cdf.shape[1]):
                raise TablesError(
                    f"region CDFs for {count} channels must be ({count}, {cdf.shape[1]}) with "
                    f"1 ≤ {count} ≤ {channels}; got {rows.shape}")
            self._check_rows(rows, f"region CDFs for {count} channels, ")

    def _check_rows(self, cdf: npt.NDArray[np.int32], what: str) -> None:
        top = 1 << self.precision
        for c in range(cdf.shape[0]):
            row = cdf[c, : self.cdf_length[c]]
            if row[0] != 0 or row[-1] != top or np.any(np.diff(row) <= 0):
                raise TablesError(
                    f"{what}channel {c}: a CDF must rise strictly from 0 to {top} (no empty symbol)"
                )

    @property
    def channels(self) -> int:
        return int(self.quantized_cdf.shape[0])

    def pmfs(self) -> list[npt.NDArray[np.float64]]:
        """Per channel, the probability of each table index (the last one is the overflow entry)."""
        scale = float(1 << self.precision)
        return [
            np.diff(self.quantized_cdf[c, : self.cdf_length[c]]) / scale
            for c in range(self.channels)
        ]

    def save(self, path: Path | str, prefix: str = "") -> None:
        arrays = {prefix + k: getattr(self, k) for k in TABLE_KEYS}
        arrays[prefix + "precision"] = np.array(self.precision, dtype=np.int32)
        for count, rows in self.region_cdfs.items():
            arrays[f"{prefix}{REGION_CDF_KEY}{count}"] = rows
        np.savez(path, **arrays)

    def with_region_cdfs(self, symbols: Mapping[int, npt.NDArray[np.int32]]) -> FactorizedTables:
        """These tables plus region CDFs fit to `symbols`: per channel count k, (k, n) symbols of
        the positions the region head kept. Counts with add-half smoothing over the table's
        entries (an escape counts for the overflow entry), each entry at least 1 / 2**precision,
        so a symbol the fit never saw still codes."""
        top = 1 << self.precision
        fitted = dict(self.region_cdfs)
        for count, values in symbols.items():
            rows = np.zeros((count, self.quantized_cdf.shape[1]), np.int32)
            for c in range(count):
                entries = int(self.cdf_length[c]) - 1  # the table's symbols + the overflow
                index = values[c].astype(np.int64) - int(self.offset[c])
                index[(index < 0) | (index >= entries - 1)] = entries - 1
                weights = np.bincount(index, minlength=entries)[:entries] + 0.5
                freqs = 1 + np.floor(weights / weights.sum() * (top - entries)).astype(np.int64)
                freqs[np.argmax(freqs)] += top - int(freqs.sum())  # exactly 2**precision
                rows[c, : entries + 1] = np.concatenate([[0], np.cumsum(freqs)])
            fitted[count] = rows
        return replace(self, region_cdfs=fitted)

    @classmethod
    def load(cls, path: Path | str, prefix: str = "") -> FactorizedTables:
        try:
            with np.load(path, allow_pickle=False) as npz:
                return cls(
                    np.ascontiguousarray(npz[prefix + "quantized_cdf"], dtype=np.int32),
                    np.ascontiguousarray(npz[prefix + "cdf_length"], dtype=np.int32),
                    np.ascontiguousarray(npz[prefix + "offset"], dtype=np.int32),
                    np.ascontiguousarray(npz[prefix + "medians"], dtype=np.float32),
                    int(npz[prefix + "precision"]),
                    {int(key[len(prefix + REGION_CDF_KEY):]): np.ascontiguousarray(
                        npz[key], dtype=np.int32)
                     for key in npz.files if key.startswith(prefix + REGION_CDF_KEY)},
                )
        except KeyError as exc:
            raise TablesError(f"{path}: missing table {exc}; expected keys {TABLE_KEYS}") from exc


MAX_REGION_CELL = 255  # one byte on the wire


@dataclass(frozen=True, eq=False)
class Regions:
    """The cells of a latent that carry symbols: `cells` (rows, cols) over `cell`-position squares,
    rows = ceil(H / cell), cols = ceil(W / cell)."""

    cells: npt.NDArray[np.bool_]
    cell: int

    def positions(self, height: int, width: int) -> npt.NDArray[np.bool_]:
        """(H·W,) row-major: True where a latent position lies in a set cell."""
        rows, cols = -(-height // self.cell), -(-width // self.cell)
        if not 1 <= self.cell <= MAX_REGION_CELL or self.cells.shape != (rows, cols):
            raise CodecError(
                f"regions of cell {self.cell} over a {height}x{width} latent need a "
                f"{rows}x{cols} grid and a cell in 1..{MAX_REGION_CELL}; got {self.cells.shape}"
            )
        grown = np.repeat(np.repeat(self.cells, self.cell, axis=0), self.cell, axis=1)
        return np.ascontiguousarray(grown[:height, :width]).reshape(-1)

    def to_bytes(self) -> bytes:
        return bytes([self.cell]) + np.packbits(self.cells.reshape(-1)).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, height: int, width: int) -> Regions:
        """CodecError unless `data` is exactly one cell byte and the grid's bits, zero-padded."""
        if not data or data[0] == 0:
            raise CodecError("a regions string starts with its cell size (1..255)")
        cell = data[0]
        rows, cols = -(-height // cell), -(-width // cell)
        count = rows * cols
        if len(data) != 1 + -(-count // 8):
            raise CodecError(
                f"regions of cell {cell} over a {height}x{width} latent take "
                f"{1 + -(-count // 8)} bytes, got {len(data)}"
            )
        bits = np.unpackbits(np.frombuffer(data, np.uint8, offset=1))
        if bits[count:].any():
            raise CodecError("the regions string's padding bits must be zero")
        return cls(bits[:count].astype(bool).reshape(rows, cols), cell)


@dataclass(frozen=True)
class KeptPositions:
    """A regions string, parsed: its cell size, the (H·W,) row-major mask of the latent positions
    it keeps (read-only) and their count."""

    cell: int
    mask: npt.NDArray[np.bool_]
    count: int


def kept_positions(data: bytes, height: int, width: int) -> KeptPositions:
    """`Regions.from_bytes(data, height, width)`'s positions, parsed once per distinct string:
    the edge checks a payload's plausibility and then decodes it, and both need the mask; a
    scene that holds still repeats its string frame after frame. CodecError as `from_bytes`
    (a malformed string is never cached)."""
    return _kept_positions(bytes(data), height, width)


@lru_cache(maxsize=64)
def _kept_positions(data: bytes, height: int, width: int) -> KeptPositions:
    regions = Regions.from_bytes(data, height, width)
    mask = regions.positions(height, width)
    mask.flags.writeable = False  # shared by every caller of the cache
    return KeptPositions(regions.cell, mask, int(mask.sum()))


@dataclass(frozen=True, eq=False)
class FactorizedAnsCodec:
    """Quantize around the medians and ANS-code each channel with its own table."""

    tables: FactorizedTables
    limits: DecodeLimits = DEFAULT_LIMITS
    codec_id: CodecId = CodecId.FACTORIZED_ANS
    backend: Backend = "auto"
    _ans: AnsCoder = field(init=False, repr=False)
    _region_ans: dict[int, AnsCoder] = field(init=False, repr=False)
    _pmf_length: npt.NDArray[np.int32] = field(init=False, repr=False)
    _medians: npt.NDArray[np.float32] = field(init=False, repr=False)
    _offset: npt.NDArray[np.int32] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Built once: the coder's per-channel models (the hot path only looks them up).
        freqs = Frequencies.from_cdf(
            self.tables.quantized_cdf, self.tables.cdf_length, self.tables.precision
        )
        object.__setattr__(self, "_ans", make_ans(freqs, self.backend))
        length = self.tables.cdf_length
        object.__setattr__(self, "_region_ans", {
            count: make_ans(Frequencies.from_cdf(rows, length[:count], self.tables.precision),
                            self.backend)
            for count, rows in self.tables.region_cdfs.items()})
        object.__setattr__(self, "_pmf_length", (self.tables.cdf_length - 2)[:, None])
        object.__setattr__(self, "_medians", self.tables.medians[:, None, None])
        object.__setattr__(self, "_offset", self.tables.offset[:, None])

    # -- symbols: the lossless part -------------------------------------------------------------
    def quantize(self, latent: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.int32]:
        """compressai's `quantize(x, "symbols", medians)`: round half to even around the medians."""
        chw = as_chw(latent)
        self._check_channels(chw.shape[0])
        medians = self._medians[: chw.shape[0]]
        return np.rint(chw.astype(np.float32) - medians).astype(np.int32)

    def dequantize(self, symbols: npt.NDArray[np.int32]) -> npt.NDArray[np.float32]:
        return symbols.astype(np.float32) + self._medians[: symbols.shape[0]]

    def encode_symbols(
        self, symbols: npt.NDArray[np.int32], regions: Regions | None = None
    ) -> Payload:
        """With `regions`, only the positions in its set cells are coded (see the module doc)."""
        chw = as_chw(symbols)
        channels = chw.shape[0]
        self._check_channels(channels)
        flat = chw.reshape(channels, -1).astype(np.int32, copy=False)
        if regions is not None:
            flat = flat[:, regions.positions(chw.shape[1], chw.shape[2])]
        index = flat - self._offset[:channels]
        pmf_length = self._pmf_length[:channels]
        escaped = (index < 0) | (index >= pmf_length)
        escapes = _escape_distances(flat, self._offset[:channels], pmf_length, escaped)
        index = np.where(escaped, pmf_length, index).astype(np.int32)
        # no position kept: nothing to code (the coder's flush would still cost a word)
        coder = self._coder(channels, regions is not None)
        words = (coder.encode(index).astype("<u4", copy=False).tobytes()
                 if index.size else b"")
        shape = tuple(int(d) for d in chw.shape)
        strings: tuple[bytes, ...] = (words, varint.encode(escapes))
        if regions is not None:
            strings += (regions.to_bytes(),)
        return Payload(self.codec_id, shape, strings)

    def decode_symbols(self, payload: Payload) -> npt.NDArray[np.int32]:
        self.limits.check_latent(payload, self.codec_id)
        with_regions = len(payload.strings) == 3
        words_bytes, escape_bytes, *region_bytes = expect_strings(payload, 3 if with_regions else 2)
        channels, height, width = payload.shape
        self._check_channels(channels)
        if len(words_bytes) % 4:
            raise CodecError("ANS words must be whole 4-byte words; payload truncated?")
        parsed = kept_positions(region_bytes[0], height, width) if with_regions else None
        kept = None if parsed is None else parsed.mask
        count = height * width if parsed is None else parsed.count
        words = np.frombuffer(words_bytes, dtype="<u4").astype(np.uint32)
        if count == 0:
            if words.size:
                raise CodecError("no region is set, yet the payload carries ANS words")
            index = np.zeros((channels, 0), np.int32)
        else:
            index = self._coder(channels, kept is not None).decode(words, channels, count)
        pmf_length = self._pmf_length[:channels]
        escaped = index == pmf_length
        distances = varint.decode(escape_bytes, count=int(escaped.sum()))
        symbols = index + self._offset[:channels]
        if distances.size:
            symbols[escaped] = _symbols_from_distances(
                distances, np.nonzero(escaped)[0], self.tables.offset, self.tables.cdf_length - 2
            )
        if kept is not None:  # the left-out positions: symbol 0, the median
            full = np.zeros((channels, height * width), np.int32)
            full[:, kept] = symbols
            symbols = full
        return symbols.reshape(channels, height, width)

    # -- the Codec interface: float latent in, dequantized latent out ---------------------------
    def encode(self, array: npt.NDArray[np.generic], regions: Regions | None = None) -> Payload:
        return self.encode_symbols(self.quantize(np.asarray(array, dtype=np.float32)), regions)

    def decode(self, payload: Payload) -> npt.NDArray[np.float32]:
        return self.dequantize(self.decode_symbols(payload))

    def _coder(self, channels: int, regions: bool) -> AnsCoder:
        """The region CDFs of this channel count for a payload with regions, if the tables have
        them; the prior's otherwise."""
        return self._region_ans.get(channels, self._ans) if regions else self._ans

    def _check_channels(self, channels: int) -> None:
        if not 1 <= channels <= self.tables.channels:
            raise CodecError(
                f"latent has {channels} channels; "
                f"the prior's tables cover 1..{self.tables.channels}"
            )


def _escape_distances(
    flat: npt.NDArray[np.int32],
    offset: npt.NDArray[np.int32],
    pmf_length: npt.NDArray[np.int32],
    escaped: npt.NDArray[np.bool_],
) -> npt.NDArray[np.uint64]:
    """Zig-zag distance of each escaped symbol beyond its table, in row-major order."""
    rows = np.nonzero(escaped)[0]
    values = flat[escaped].astype(np.int64)
    low = offset[rows, 0].astype(np.int64)
    high = low + pmf_length[rows, 0]  # first value above the table
    above = values >= high
    distance = np.where(above, 2 * (values - high), 2 * (low - 1 - values) + 1)
    return distance.astype(np.uint64)


def _symbols_from_distances(
    distances: npt.NDArray[np.uint64],
    rows: npt.NDArray[np.intp],
    offset: npt.NDArray[np.int32],
    pmf_length: npt.NDArray[np.int32],
) -> npt.NDArray[np.int32]:
    half = (distances >> np.uint64(1)).astype(np.int64)
    low = offset[rows].astype(np.int64)
    high = low + pmf_length[rows]
    values = np.where(distances & np.uint64(1), low - 1 - half, high + half)
    if values.min() < np.iinfo(np.int32).min or values.max() > np.iinfo(np.int32).max:
        raise CodecError("an escaped symbol lies outside int32: corrupt escape stream")
    return values.astype(np.int32)
