"""benchmarks.scheduler_replay: a run's outcomes fed back through a fresh policy rebuild the
estimates it decided on, and show what another scheduler setting would have predicted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.scheduler_replay import replay
from device_client.config import SchedulerConfig
from shared.bundle import load_bundle

DEMO_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "demo-shapes"


def record(i: int, kind: str, uplink: float, reason: str | None = None) -> dict[str, Any]:
    edge = kind == "edge"
    return {
        "frame_id": i, "kind": kind, "reason": reason, "branch": "split-w025", "bytes_sent": 220,
        "capture_time_unix_ns": int((1000 + i / 15) * 1e9),
        "timings_ms": {"head": 12.0, "encode": 1.0, "uplink": uplink, "total": uplink + 14.0},
        "server_ms": {"queue_wait": 2.0, "decode": 1.0, "tail": 30.0, "total": 33.0,
                      "batch_size": 1} if edge else None,
    }


def clip() -> list[dict[str, Any]]:
    calm = [record(i, "edge", 33.0 + 20.0) for i in range(30)]  # 20 ms round trips
    stall = [record(i, "local", 900.0, "deadline_missed") for i in range(30, 36)]
    back = [record(50, "edge", 33.0 + 150.0), record(58, "edge", 33.0 + 40.0)]
    return calm + stall + back


def test_replay_rebuilds_the_prediction_and_its_terms() -> None:
    manifest = load_bundle(DEMO_BUNDLE).manifest
    rows = replay(clip(), manifest, SchedulerConfig(), "split-w025", after_frame=29)
    assert [r["frame_id"] for r in rows] == [29, 50, 58], "edge replies from frame 29 on"
    calm, first, second = rows
    assert calm["rtt"][0] == 20.0 and calm["budget_ms"] == round(300 / 1.3, 1)
    assert first["rtt"] == (150.0, 75.0), "the stall restarted from the first reply back"
    for r in rows:  # the prediction is the terms' means plus two deviations of their sum
        means = sum(r[k][0] for k in ("device", "rtt", "edge_queue", "edge_compute"))
        assert r["transfer_ms"] + means < r["predicted_ms"]
    # the least of the first replies (the default) against the first reply alone
    assert second["rtt"] == (40.0, 20.0)
    before = replay(clip(), manifest, SchedulerConfig(recovery_replies=1), "split-w025", 29)
    assert before[2]["rtt"][0] > 100 and before[2]["predicted_ms"] > second["predicted_ms"] + 50
