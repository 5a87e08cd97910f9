"""Typed errors of splitedge, as a tree. Catch the narrowest one you can act on.

    SplitEdgeError            anything splitedge raises on purpose
     ├── CodecError           bytes that cannot be decoded (malformed, truncated, wrong codec)
     │    └── LimitExceeded   declared sizes beyond the configured limits; nothing was allocated
     └── TablesError          entropy tables that are inconsistent or do not fit the latent

Every message says what was wrong, what was expected, and what to do where that is not obvious.
"""

from __future__ import annotations


class SplitEdgeError(Exception):
    """Base of every error splitedge raises on purpose."""


class CodecError(SplitEdgeError):
    """A payload could not be decoded: malformed, truncated, or not what its codec id says."""


class LimitExceeded(CodecError):
    """A payload declares more data than the configured limits allow; nothing was allocated."""


class TablesError(SplitEdgeError):
    """Entropy tables are inconsistent, or do not match the latent they should code."""
