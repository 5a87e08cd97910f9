"""Logging that a client cannot turn into a flood.

A client decides how often some lines are written: every stalled connection past the fd limit,
every frame that trips the same bug. `RateLimit` keeps the first line of each kind and then at
most one per interval, saying how many were dropped, so 20,000 refused connections make a few
lines, not 22,517 tracebacks.
"""

from __future__ import annotations

import logging
import time


class RateLimit(logging.Filter):
    """Pass at most `per_s` records per second per (logger, message template)."""

    def __init__(self, per_s: float = 0.1) -> None:
        super().__init__()
        self.interval_s = 1.0 / per_s
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self.interval_s:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.msg = f"{record.msg} (and {dropped} more like it, not logged)"
        if len(self._last) > 1024:  # message templates are few; bound it anyway
            self._last.clear()
        return True


def limit_noisy_loggers(per_s: float = 0.1) -> None:
    """asyncio ('socket.accept() out of system resource'), uvicorn and grpc log once per
    connection or call; rate-limit them for this process."""
    for name in ("asyncio", "uvicorn.error", "grpc._cython.cygrpc", "grpc.aio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimit) for f in logger.filters):
            logger.addFilter(RateLimit(per_s))
