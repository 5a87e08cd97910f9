"""The ANS bitstream of the factorized codec, and the two coders that write and read it.

Torch-free, and importable without constriction.

The bitstream is constriction's default stack coder (`constriction.stream.stack.AnsCoder`): a
64-bit state, 32-bit words, 24-bit probabilities. `ConstrictionAns` uses that Rust coder where
its wheel installs (x86_64 Linux, macOS, Windows). constriction publishes no wheel for aarch64
Linux — the Raspberry Pi and Jetson boards the device daemon exists for — so `PythonAns` is the
same coder written in plain Python integer arithmetic. Both produce the same words for the same
symbols (tests compare them word for word, and the emulated-Pi check compares across
architectures), so one codec id on the wire covers both and the edge decodes with whichever it
has.

The model is exact, not re-quantized: each channel's 24-bit frequencies are the prior's 16-bit
table frequencies × 256 (`Frequencies`). constriction's float-to-fixed-point quantizer is bypassed
by handing it weights `frequency - 1` whose sum is `2**24 - n`: its "fast" quantizer then computes
`floor(cumulative × 1.0) + index`, which is the exact cumulative frequency. So the contract is the
tables, and a Python coder can reproduce every word without copying constriction's float logic.

Words are emitted at the end of the stack and read back from it; the final state is appended as
its non-zero 32-bit chunks, low chunk first (constriction's `get_compressed`).
"""

from __future__ import annotations

import importlib.util
from array import array
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from shared.errors import CodecError

PRECISION = 24
WORD_BITS = 32
_WORD_MASK = (1 << WORD_BITS) - 1
_QUANTILE_MASK = (1 << PRECISION) - 1
_RENORM_SHIFT = 64 - PRECISION  # encode: flush a word when state >> 40 >= frequency
_STATE_FLOOR = 1 << (64 - WORD_BITS)  # decode: refill while the state is below 2**32
TABLE_SHIFT = 8  # 16-bit tables → 24-bit frequencies

Backend = Literal["auto", "constriction", "python"]


def constriction_available() -> bool:
    return importlib.util.find_spec("constriction") is not None


@dataclass(frozen=True, eq=False)
class Frequencies:
    """Per channel, the 24-bit frequency and left cumulative of every table index."""

    frequency: npt.NDArray[np.int64]  # (C, L): 0 past a channel's table
    cumulative: npt.NDArray[np.int64]  # (C, L)
    length: npt.NDArray[np.int64]  # (C,): table entries per channel (the overflow entry included)

    @classmethod
    def from_cdf(
        cls, quantized_cdf: npt.NDArray[np.int32], cdf_length: npt.NDArray[np.int32], precision: int
    ) -> Frequencies:
        shift = PRECISION - precision
        if shift < 0:
            raise CodecError(f"tables of {precision}-bit precision exceed the coder's {PRECISION}")
        channels, width = quantized_cdf.shape
        frequency = np.zeros((channels, width - 1), dtype=np.int64)
        cumulative = np.zeros((channels, width - 1), dtype=np.int64)
        length = cdf_length.astype(np.int64) - 1
        for c in range(channels):
            row = quantized_cdf[c, : cdf_length[c]].astype(np.int64) << shift
            frequency[c, : length[c]] = np.diff(row)
            cumulative[c, : length[c]] = row[:-1]
        return cls(frequency, cumulative, length)


class AnsCoder(Protocol):
    """Codes table indices, channel by channel, into the shared ANS bitstream."""

    @property
    def name(self) -> str: ...

    def encode(self, index: npt.NDArray[np.int32]) -> npt.NDArray[np.uint32]:
        """(C, N) table indices → words. Channel 0 decodes first."""
        ...

    def decode(
        self, words: npt.NDArray[np.uint32], channels: int, count: int
    ) -> npt.NDArray[np.int32]:
        """Words → (channels, count) table indices; CodecError if corrupt or not fully used."""
        ...


@dataclass(frozen=True, eq=False)
class PythonAns:
    """constriction's stack coder in plain Python integers: runs wherever CPython does."""

    freqs: Frequencies
    name: str = "python"
    _lookup: list[array[int]] = field(init=False, repr=False)
    _frequency: list[list[int]] = field(init=False, repr=False)
    _cumulative: list[list[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Built once per codec. Cumulatives are multiples of 256, so a quantile's top 16 bits
        # name its table index: a 64 Ki-entry lookup per channel instead of a search per symbol.
        lookups = []
        for c in range(self.freqs.length.shape[0]):
            width = self.freqs.frequency[c, : self.freqs.length[c]] >> TABLE_SHIFT
            lookups.append(array("H", np.repeat(np.arange(width.size), width).tolist()))
        object.__setattr__(self, "_lookup", lookups)
        object.__setattr__(self, "_frequency", self.freqs.frequency.tolist())
        object.__setattr__(self, "_cumulative", self.freqs.cumulative.tolist())

    def encode(self, index: npt.NDArray[np.int32]) -> npt.NDArray[np.uint32]:
        rows = np.arange(index.shape[0])[:, None]
        # Per-symbol lookups are vectorized up front; the loop is only the coder's arithmetic.
        # ANS is a stack: the last symbol of the last channel goes first.
        frequency = self.freqs.frequency[rows, index].ravel()[::-1].tolist()
        cumulative = self.freqs.cumulative[rows, index].ravel()[::-1].tolist()
        bulk: list[int] = []
        emit = bulk.append
        state = 0
        for f, cum in zip(frequency, cumulative, strict=True):
            if state >> _RENORM_SHIFT >= f:
                emit(state & _WORD_MASK)
                state >>= WORD_BITS
            prefix, remainder = divmod(state, f)
            state = (prefix << PRECISION) | (cum + remainder)
        while state:
            emit(state & _WORD_MASK)
            state >>= WORD_BITS
        return np.array(bulk, dtype=np.uint32)

    def decode(
        self, words: npt.NDArray[np.uint32], channels: int, count: int
    ) -> npt.NDArray[np.int32]:
        stack = words.tolist()
        state = _initial_state(stack)
        out = np.empty((channels, count), dtype=np.int32)
        pop = stack.pop
        for c in range(channels):
            lookup, frequency, cumulative = (
                self._lookup[c],
                self._frequency[c],
                self._cumulative[c],
            )
            row = [0] * count
            for i in range(count):
                quantile = state & _QUANTILE_MASK
                symbol = lookup[quantile >> TABLE_SHIFT]
                state = (state >> PRECISION) * frequency[symbol] + quantile - cumulative[symbol]
                if state < _STATE_FLOOR and stack:
                    state = (state << WORD_BITS) | pop()
                row[i] = symbol
            out[c] = row
        if state or stack:
            raise CodecError(
                "ANS stream holds more data than the declared shape: corrupt or wrong shape"
            )
        return out


@dataclass(frozen=True, eq=False)
class ConstrictionAns:
    """The same bitstream through constriction's Rust coder (x86_64, macOS, Windows wheels)."""

    freqs: Frequencies
    name: str = "constriction"
    _models: list[object] = field(init=False, repr=False)
    _coder_type: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import constriction  # optional: the wheel exists on some platforms only

        # Weights `frequency - 1` make constriction's fast quantizer reproduce the frequencies
        # exactly (see the module docstring), so no float rounding enters the model.
        models = [
            constriction.stream.model.Categorical(
                (self.freqs.frequency[c, : self.freqs.length[c]] - 1).astype(np.float64),
                perfect=False,
            )
            for c in range(self.freqs.length.shape[0])
        ]
        object.__setattr__(self, "_models", models)
        object.__setattr__(self, "_coder_type", constriction.stream.stack.AnsCoder)

    def encode(self, index: npt.NDArray[np.int32]) -> npt.NDArray[np.uint32]:
        coder = self._coder_type()
        for c in range(index.shape[0] - 1, -1, -1):
            coder.encode_reverse(index[c], self._models[c])
        words: npt.NDArray[np.uint32] = coder.get_compressed()
        return words

    def decode(
        self, words: npt.NDArray[np.uint32], channels: int, count: int
    ) -> npt.NDArray[np.int32]:
        if words.size and words[-1] == 0:
            raise CodecError("corrupt ANS stream: it ends in a zero word")
        out = np.empty((channels, count), dtype=np.int32)
        try:
            coder = self._coder_type(words)
            for c in range(channels):
                out[c] = coder.decode(self._models[c], count)
            leftover = not coder.is_empty()
        except (ValueError, RuntimeError, AssertionError) as exc:
            raise CodecError(f"corrupt ANS stream: {exc}") from exc
        if leftover:
            raise CodecError(
                "ANS stream holds more data than the declared shape: corrupt or wrong shape"
            )
        return out


def make_ans(freqs: Frequencies, backend: Backend = "auto") -> AnsCoder:
    """constriction where it is installed (fast), the Python coder elsewhere: same bitstream."""
    if backend == "python" or (backend == "auto" and not constriction_available()):
        return PythonAns(freqs)
    if backend in ("auto", "constriction"):
        return ConstrictionAns(freqs)
    raise CodecError(f"unknown ANS backend {backend!r}; expected auto, constriction or python")


def _initial_state(stack: list[int]) -> int:
    """constriction's `from_compressed`: the top words, high first, until the state is full."""
    if not stack:
        return 0
    first = stack.pop()
    if first == 0:
        raise CodecError("corrupt ANS stream: it ends in a zero word")
    state = first
    while stack:
        state = (state << WORD_BITS) | stack.pop()
        if state >= _STATE_FLOOR:
            break
    return state
