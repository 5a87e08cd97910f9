"""What the edge may say back: client strings capped, heap addresses blanked.

Error messages quote what the client sent, so a client can see what was wrong; but a 16 MiB name
quoted back makes a 64 MiB trailer (gRPC's repr escapes every byte), and `<object at 0x7f…>`
tells an attacker where the heap is. Every message built from foreign text goes through here.
"""

from __future__ import annotations

import re

MAX_SHOWN = 64  # characters of a client string quoted in a message
MAX_ECHOED = 256  # characters of a client string copied into a response field

_HEAP_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


def shown(text: str, limit: int = MAX_SHOWN) -> str:
    """`repr(text)`, cut to `limit` characters of the original with the full length noted."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


def echoed(text: str) -> str:
    """A client string copied into a response: at most MAX_ECHOED characters."""
    return text[:MAX_ECHOED]


def scrubbed(text: str) -> str:
    """A message from a library, without heap addresses."""
    return _HEAP_ADDRESS.sub("0x…", text)
