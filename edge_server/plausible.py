"""What a bundle can produce: a latent's declared shape and byte strings checked before decode.

A request declares a latent's shape; decoding allocates and the tail computes for that shape. So
the shape must be one the bundle's head could have produced for the declared input size — the
branch's channel count, and the spatial size of that input padded as the manifest's resize rule
pads it, divided by the split's stride — not merely one under the decode limits (which leave
room for ~270x a real latent). And an entropy-coded stream cannot be shorter than the
information its shape needs at the prior's most likely symbol in every place: an empty byte
string declaring 14,400 symbols is refused here, before any work.

Torch-free and decoder-free: it reads only the manifest and the entropy tables' CDFs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.bundle.manifest import (
    Branch,
    CenterCropResize,
    FixedResize,
    Manifest,
    MinMaxSideResize,
)
from shared.codecs import CodecId, kept_positions
from shared.errors import CodecError, InvalidRequest

Size = tuple[int, int]  # (height, width)

# The coder's final state: up to two 32-bit words that carry no symbol information of their own.
_ANS_STATE_BITS = 64
# Bits a symbol can cost at most under a table of 2**-24 probability resolution, with room.
_ANS_MAX_BITS_PER_SYMBOL = 32
_VARINT_MAX_BYTES = 10  # one escaped symbol's distance, at most


@dataclass(frozen=True)
class LatentPlausibility:
    """The latent shapes and stream lengths one bundle can produce."""

    manifest: Manifest
    # Per channel, the fewest bits any symbol costs (-log2 of the most likely entry's
    # probability); empty when the tables could not be read, and then only the shape is checked.
    min_bits_per_symbol: tuple[float, ...] = ()

    @classmethod
    def of(cls, manifest: Manifest, tables: Any = None) -> LatentPlausibility:
        return cls(manifest, _min_bits(tables))

    def expected_shape(self, branch: Branch, input_size: Size) -> tuple[int, int, int]:
        """(C, H, W) the head of `branch` gives for an input of `input_size`; InvalidRequest when
        the preprocessing cannot give that input size."""
        channels = self._channels(branch)
        padded = self._padded(input_size)
        stride = self.manifest.latent.stride
        return (channels, -(-padded[0] // stride), -(-padded[1] // stride))

    def check(
        self,
        branch: Branch,
        codec: CodecId,
        shape: tuple[int, ...],
        strings: tuple[bytes, ...],
        input_size: Size,
    ) -> None:
        expected = self.expected_shape(branch, input_size)
        if tuple(shape) != expected:
            raise InvalidRequest(
                f"branch {branch.id} gives a latent of shape {list(expected)} for input_size "
                f"{list(input_size)} (stride {self.manifest.latent.stride}), the request "
                f"declares {list(shape)[:8]}: send the head's output shape unchanged"
            )
        if codec is CodecId.FACTORIZED_ANS:
            self._check_ans(expected, strings)

    def _check_ans(self, shape: tuple[int, int, int], strings: tuple[bytes, ...]) -> None:
        regions = self.manifest.regions
        allowed = (2, 3) if regions is not None else (2,)
        if len(strings) not in allowed:
            raise InvalidRequest(
                f"a FACTORIZED_ANS latent of this bundle has {' or '.join(map(str, allowed))} "
                f"byte strings (the third: its regions), got {len(strings)}")
        channels, height, width = shape
        positions = height * width
        if len(strings) == 3:  # only the regions' positions are coded: the floor is theirs
            assert regions is not None
            try:
                coded = kept_positions(strings[2], height, width)  # the decoder's parse, cached
            except CodecError as exc:
                raise InvalidRequest(f"regions: {exc}") from exc
            if coded.cell != regions.cell:
                raise InvalidRequest(f"regions of cell {coded.cell}: this bundle's head marks "
                                     f"cells of {regions.cell}")
            positions = coded.count
        symbols = channels * positions
        words, escapes = strings[:2]
        if len(words) > symbols * _ANS_MAX_BITS_PER_SYMBOL // 8 + _ANS_STATE_BITS // 8:
            raise InvalidRequest(
                f"ANS stream of {len(words)} bytes for {symbols} symbols: more than any latent "
                "of this shape codes to"
            )
        if len(escapes) > symbols * _VARINT_MAX_BYTES:
            raise InvalidRequest(f"escape stream of {len(escapes)} bytes for {symbols} symbols")
        if len(self.min_bits_per_symbol) < channels:
            return
        needed_bits = positions * sum(self.min_bits_per_symbol[:channels])
        # Half the information bound, in whole words: the bound is exact for the coder's
        # quantized tables only up to rounding; a real stream is many times longer.
        floor = 4 * math.floor(max(0.0, needed_bits / 2 - _ANS_STATE_BITS) / 32)
        if len(words) < floor:
            raise InvalidRequest(
                f"ANS stream of {len(words)} bytes cannot code {symbols} symbols of this prior "
                f"(at least ~{floor} bytes): truncated, or the shape is not the real one"
            )

    def _channels(self, branch: Branch) -> int:
        if branch.latent_channels is not None:
            return branch.latent_channels
        if branch.width is not None:
            return self.manifest.head_for(branch.width).latent_channels
        return self.manifest.latent.channels

    def _padded(self, input_size: Size) -> Size:
        height, width = input_size
        rule = self.manifest.preprocessing.resize
        if isinstance(rule, MinMaxSideResize):
            # The resize makes the shorter side at most min_size and the longer at most max_size.
            fits = min(height, width) <= rule.min_size and max(height, width) <= rule.max_size
            step = rule.size_divisible
            padded = (-(-height // step) * step, -(-width // step) * step)
            limit = f"sides at most {rule.min_size} (shorter) and {rule.max_size} (longer)"
        elif isinstance(rule, FixedResize):
            fits = (height, width) == (rule.height, rule.width)
            padded = (height, width)
            limit = f"exactly {rule.height}×{rule.width}"
        else:
            assert isinstance(rule, CenterCropResize)
            fits = height == width <= rule.crop
            padded = (height, width)
            limit = f"a square of at most {rule.crop}"
        if not (height > 0 and width > 0 and fits):
            raise InvalidRequest(
                f"input_size {[height, width]} is not one this bundle's preprocessing gives "
                f"({limit})"
            )
        return padded


def _min_bits(tables: Any) -> tuple[float, ...]:
    """-log2 of each channel's most likely table entry, from compressai-style quantized CDFs: the
    least over the prior's CDFs and the region CDFs (a payload with regions is coded with
    those), so the floor holds for either."""
    try:
        cdf = np.asarray(tables.quantized_cdf, dtype=np.int64)
        lengths = np.asarray(tables.cdf_length, dtype=np.int64)
        scale = float(1 << int(tables.precision))
        bits = []
        for c in range(cdf.shape[0]):
            rows = [cdf[c]] + [np.asarray(r[c], dtype=np.int64)
                               for r in getattr(tables, "region_cdfs", {}).values() if c < len(r)]
            pmax = max(float(np.diff(row[: lengths[c]]).max()) for row in rows) / scale
            bits.append(max(0.0, -math.log2(min(1.0, pmax))))
        return tuple(bits)
    except (AttributeError, TypeError, ValueError, IndexError):
        return ()
