"""Log lines a client can cause are rate-limited (issue 12: 19,980 stalled connections wrote
22,517 tracebacks in 40 s)."""

from __future__ import annotations

import logging

import pytest

from edge_server.logs import RateLimit, limit_noisy_loggers


def test_a_flood_of_one_message_makes_one_line(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("splitedge.test.flood")
    logger.addFilter(RateLimit(per_s=0.1))
    with caplog.at_level(logging.ERROR, logger=logger.name):
        for _ in range(20_000):
            logger.error("socket.accept() out of system resource")
        logger.error("another message")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["socket.accept() out of system resource", "another message"]


def test_the_servers_noisy_loggers_are_limited(caplog: pytest.LogCaptureFixture) -> None:
    limit_noisy_loggers()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for _ in range(1000):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logging.getLogger("asyncio").exception("socket.accept() out of system resource")
    assert len(caplog.records) == 1
