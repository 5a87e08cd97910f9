"""Vectorized LEB128 varints for unsigned integers below 2**35 (at most 5 bytes each).

Used for the entropy codec's escapes: rare, mostly small, and must round-trip exactly. Decoding
is bounded by the count the caller expects, so hostile bytes cannot make it loop or allocate.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from shared.errors import CodecError

MAX_BYTES = 5
_LIMIT = np.uint64(1) << np.uint64(7 * MAX_BYTES)


def encode(values: npt.NDArray[np.uint64]) -> bytes:
    values = np.asarray(values, dtype=np.uint64)
    if values.size == 0:
        return b""
    if values.max() >= _LIMIT:
        raise ValueError(f"varint values must be below 2**{7 * MAX_BYTES}")
    lengths = np.ones(values.size, dtype=np.int64)
    for k in range(1, MAX_BYTES):
        lengths += values >= (np.uint64(1) << np.uint64(7 * k))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    out = np.empty(int(ends[-1]), dtype=np.uint8)
    for k in range(MAX_BYTES):
        has = lengths > k
        chunk = (values[has] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (lengths[has] > k + 1).astype(np.uint64) << np.uint64(7)
        out[starts[has] + k] = (chunk | more).astype(np.uint8)
    return out.tobytes()


def decode(data: bytes, count: int) -> npt.NDArray[np.uint64]:
    """Exactly `count` values, or CodecError (too few, too many, overlong)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw < 0x80)
    if ends.size != count or (raw.size and (ends.size == 0 or ends[-1] != raw.size - 1)):
        raise CodecError(
            f"escape stream holds {ends.size} values (+ trailing bytes?), expected {count}"
        )
    if count == 0:
        return np.zeros(0, dtype=np.uint64)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > MAX_BYTES:
        raise CodecError(f"escape value longer than {MAX_BYTES} bytes: corrupt escape stream")
    values = np.zeros(count, dtype=np.uint64)
    for k in range(MAX_BYTES):
        has = lengths > k
        chunk = raw[starts[has] + k].astype(np.uint64) & np.uint64(0x7F)
        values[has] |= chunk << np.uint64(7 * k)
    return values
