"""The link shaper's pieces: trace files, rate lookup, and (as root) a real tbf on a veth in a
network namespace, changed live."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from loadtest.netshape import LinkSpec, qdisc_stats, rate_at, read_trace, shape, tc, unshape

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_trace_reads_and_replays_as_a_looped_step_function() -> None:
    trace = read_trace(ROOT / "docker" / "traces" / "wifi-fade.csv")
    assert trace[0] == (0.0, 20.0)
    assert rate_at(trace, 0) == 20.0
    assert rate_at(trace, 19.9) == 20.0
    assert rate_at(trace, 20.0) == 8.0
    assert rate_at(trace, 50) == 1.0
    period = trace[-1][0] + (trace[-1][0] - trace[-2][0])
    assert rate_at(trace, period + 21) == 8.0  # looped
    assert rate_at(trace, 10_000, loop=False) == trace[-1][1]


def test_a_bad_trace_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("time_s,mbit\n0,5\n10,fast\n")
    with pytest.raises(ValueError, match=r"bad\.csv:3"):
        read_trace(path)
    path.write_text("0,0\n")
    with pytest.raises(ValueError, match="mbit > 0"):
        read_trace(path)


def test_burst_scales_with_the_rate_but_stays_above_two_frames() -> None:
    assert LinkSpec(0.1).burst_bytes() == 3200
    assert LinkSpec(100).burst_bytes() == 125_000


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("tc") is None, reason="needs root and iproute2"
)
def test_tbf_on_a_veth_in_a_namespace_changes_live() -> None:
    tag = os.getpid() % 10000
    ns, host, peer = f"se-test-{tag}", f"seth{tag}", f"setn{tag}"

    def run(*command: str) -> None:
        subprocess.run(command, check=True, capture_output=True)

    try:
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
        run("ip", "link", "set", peer, "netns", ns)
        shape(peer, LinkSpec(rate_mbit=2), netns=ns)
        assert "rate 2Mbit" in tc(["qdisc", "show", "dev", peer], ns)
        shape(peer, LinkSpec(rate_mbit=0.5), netns=ns)
        assert "rate 500Kbit" in tc(["qdisc", "show", "dev", peer], ns)
        assert qdisc_stats(peer, ns)["drops"] == 0
        unshape(peer, ns)
        assert "tbf" not in tc(["qdisc", "show", "dev", peer], ns)
    finally:
        subprocess.run(["ip", "link", "del", host], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
