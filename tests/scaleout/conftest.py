"""Real `splitedge serve` replicas behind a real HAProxy on loopback (deploy/lb/loopback.py), with
the shipped demo bundle. One fleet of three per module; a test that stops or kills a replica
leaves it so: `fleet` brings every replica back, `Fleet(scale_out).require(n)` only when fewer
than n are up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.lb.loopback import ScaleOut, haproxy_binary

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "demo-shapes"
MODEL = "demo-shapes"
REPLICAS = 3
# One torch thread per replica (two cores, three replicas, a test process and the devices); a short
# drain so a stopped replica is gone in seconds. Each frame waits up to 300 ms for a batch to
# fill: frames a replica admitted stay unanswered long enough for the drain test to SIGTERM it in
# between (the balancer's grace, 2 checks × 1 s, is longer).
SERVE_ARGS = (
    "--torch-threads",
    "1",
    "--drain-seconds",
    "3",
    "--max-pending",
    "256",
    "--max-batch-size",
    "64",
    "--max-queue-delay-ms",
    "300",
)
# Checks every second, down after 3 misses: a draining replica keeps its streams ≥ 2 s to answer
# what it admitted, then the balancer cuts them (`on-marked-down shutdown-sessions`).
CHECK_INTERVAL = "1s"


class Fleet:
    """The module's ScaleOut, with `ensure` to (re)start replicas before a test."""

    def __init__(self, scale: ScaleOut) -> None:
        self.scale = scale
        self.balancer = scale.balancer
        self.replicas = scale.replicas

    def require(self, count: int) -> Fleet:
        """At least `count` replicas up (those earlier tests left), else start them all."""
        if sum(r.running for r in self.replicas) < count:
            return self.ensure()
        return self

    def ensure(self) -> Fleet:
        """Every replica running and UP on the balancer (a test may have stopped or killed one)."""
        restart = [replica.start() for replica in self.replicas if not replica.running]
        for replica in restart:
            replica.wait_ready()
        for replica in self.replicas:
            self.balancer.wait_status(replica.name, "UP")
        return self

    def ok_frames(self) -> dict[str, float]:
        """Frames each running replica answered OK, from its own /metrics."""
        return {
            r.name: r.metric("splitedge_requests_total", status="ok")
            for r in self.replicas
            if r.running
        }


@pytest.fixture(scope="module")
def scale_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleOut]:
    if haproxy_binary() is None:
        pytest.skip(
            "haproxy is not installed: `apt-get install haproxy` (`make test` installs it when "
            "run as root on Debian/Ubuntu)"
        )
    workdir = tmp_path_factory.mktemp("scaleout")
    with ScaleOut([BUNDLE], REPLICAS, workdir, SERVE_ARGS, CHECK_INTERVAL) as scale:
        yield scale


@pytest.fixture
def fleet(scale_out: ScaleOut) -> Fleet:
    """Both replicas up: those a previous test stopped or killed are started again."""
    return Fleet(scale_out).ensure()
