"""The scheduler harness's clip: its ground truth names the classes drawn, and its empty
stretches are empty (a mislabelled clip would score every policy near zero)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")  # make_clip writes its frames with Pillow (the train extra)


def test_clip_truth_matches_the_scene_and_empty_stretches_are_empty(tmp_path: Path) -> None:
    from PIL import Image

    from benchmarks.scheduler import make_clip
    from device_client.scenes.render import MovingScene

    folder, truth = make_clip(tmp_path / "clip", 130)  # segments: 60 objects, 60 objects, 10 empty
    assert len(list(folder.glob("*.png"))) == 130 == len(truth["images"])
    by_frame: dict[int, set[int]] = {}
    for annotation in truth["annotations"]:
        by_frame.setdefault(annotation["image_id"], set()).add(annotation["category_id"])
    drawn = {label + 1 for label, *_ in MovingScene(100, objects_=3).sprites}
    assert by_frame[0] <= drawn and set().union(*(by_frame.get(i, set()) for i in range(60))) \
        == drawn
    assert {c["id"] for c in truth["categories"]} >= set().union(*by_frame.values())
    assert not any(i in by_frame for i in range(120, 130))
    # and nothing is drawn there: the frame is the third segment's background alone
    empty = np.asarray(Image.open(folder / "000120.png").convert("RGB"))
    assert np.array_equal(empty, MovingScene(102, objects_=0).frame(0).image)


def test_score_reports_how_steady_the_split_head_ran() -> None:
    """Each policy's row carries the split head's p50 / p90 ms (what the CPU quota did to the
    device); a policy that never ran a head says so instead of inventing a figure."""
    import argparse

    from benchmarks.scheduler import score, table

    truth = {"images": [{"id": i} for i in range(4)], "annotations": [],
             "categories": [{"id": 1, "name": "circle"}]}
    args = argparse.Namespace(fps=10.0, sla_ms=300.0)

    def record(i: int, timings: dict[str, float]) -> dict[str, object]:
        return {"frame_id": i, "kind": "edge", "branch": "split-w100", "bytes_sent": 100,
                "capture_time_unix_ns": int((100 + i / 10) * 1e9), "detections": [],
                "timings_ms": {"total": 50.0, **timings}}

    split = score([record(i, {"head": ms}) for i, ms in enumerate([4, 5, 6, 90])], truth,
                  args, 100.0)
    local = score([record(i, {"local": 9.0}) for i in range(4)], truth, args, 100.0)
    assert split["head_ms_p50_p90"] == [5.5, 64.8] and split["sla_hit"] == 1.0
    assert local["head_ms_p50_p90"] is None
    rows = table({"trace": "t.csv", "seconds": 0.4, "fps": 10.0, "sla_ms": 300.0,
                  "cpu_quota": 0.25, "cpu_period_ms": 10.0,
                  "policies": {"split-w100": split, "local": local}}).splitlines()
    assert "0.25 of every 10 ms" in rows[0]
    assert rows[-2].endswith("| 5.5 / 64.8 | — |") and rows[-1].endswith("| — | — |")


def test_score_says_how_soon_the_edge_answered_again_after_each_outage() -> None:
    """An outage is a trace row below `OUTAGE_MBIT`; once it ends, the first frame the edge
    answers on the plan's own branch says when the policy used the edge again. A probe is the
    policy asking, not using; a policy never back on the edge says so."""
    import argparse

    from benchmarks.scheduler import outage_ends, score, table

    trace = [(0.0, 20.0), (1.0, 0.02), (2.0, 0.02), (3.0, 18.0), (5.0, 0.05), (6.0, 9.0)]
    assert outage_ends(trace, seconds=10) == [3.0, 6.0]
    assert outage_ends(trace, seconds=4) == [3.0]
    truth = {"images": [{"id": i} for i in range(40)], "annotations": [],
             "categories": [{"id": 1, "name": "circle"}]}
    args = argparse.Namespace(fps=5.0, sla_ms=300.0)

    def record(i: int, kind: str, probe: bool = False) -> dict[str, object]:
        return {"frame_id": i, "kind": kind, "branch": "split-w100", "bytes_sent": 100,
                "capture_time_unix_ns": int((100 + i / 5) * 1e9), "detections": [],
                "decision": {"probe": probe}, "timings_ms": {"total": 50.0}}

    # the link is back at 3 s (frame 15): a probe at frame 16, the edge again from frame 18
    records = [record(i, "edge" if i < 5 or i >= 18 else "local", probe=i == 16)
               for i in range(40)]
    records[16]["kind"] = "edge"
    result = score(records, truth, args, 100.0, [3.0])
    assert result["edge_after_outage_s"] == [0.6]
    stayed = score([record(i, "local") for i in range(40)], truth, args, 100.0, [3.0])
    assert stayed["edge_after_outage_s"] == [None]
    rows = table({"trace": "t.csv", "seconds": 8.0, "fps": 5.0, "sla_ms": 300.0,
                  "cpu_quota": 0.25, "cpu_period_ms": 10.0,
                  "policies": {"adaptive": result, "local": stayed}}).splitlines()
    assert rows[-2].endswith("| 0.60 |") and rows[-1].endswith("| never |")
