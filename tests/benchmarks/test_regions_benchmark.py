"""benchmarks.regions measures what a mask costs and keeps: every cell kept finds every box cell
and codes more than none; the bundle's own threshold is always among the rows."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cv2")  # the generator draws with OpenCV (the train extra)

import numpy as np

from benchmarks.regions import cap_threshold, sweep
from split_models.data.synthetic import SceneConfig, generate_dataset

DEMO_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "demo-shapes"


def test_region_rows_report_recall_of_the_boxes_cells(tmp_path: Path) -> None:
    generate_dataset(tmp_path, seed=7, counts={"test": 4},
                     config=SceneConfig(height=240, width=320, empty_share=0.0))
    rows = sweep(DEMO_BUNDLE, tmp_path / "test.json", 4, [1.0], [0.0, 0.5, 1.01], [0.0],
                 caps=[0.1])
    by = {(r["mode"], r["value"]): r for r in rows}
    assert by[("all positions", None)]["cell_recall"] is None
    assert by[("labelled boxes", 0.0)]["cell_recall"] is None
    every, none = by[("region head", 0.0)], by[("region head", 1.01)]
    assert every["kept"] == 1.0 and every["cell_recall"] == 1.0
    assert none["kept"] == 0.0 and none["cell_recall"] == 0.0
    assert none["payload_bytes"] < every["payload_bytes"]
    # the bundle's threshold (v6 on: a few hundredths) is a row of its own, between the two
    own = [r for r in rows if r["mode"] == "region head" and r["value"] not in (0.0, 0.5, 1.01)]
    assert len(own) == 1 and 0.0 < own[0]["cell_recall"] <= 1.0
    assert by[("region head", 0.5)]["cell_recall"] <= own[0]["cell_recall"]
    # the oracle keeps exactly the boxes' cells, fewer than every cell
    assert 0.0 < by[("labelled boxes", 0.0)]["kept"] < 1.0
    # a cap keeps at most its share of the cells, on top of the bundle's threshold
    capped = by[("capped", 0.1)]
    assert capped["kept"] <= min(own[0]["kept"], 0.1 + 1e-9)
    assert capped["payload_bytes"] < own[0]["payload_bytes"]


def test_cap_threshold_admits_the_top_share() -> None:
    scores = np.arange(20, dtype=np.float32).reshape(4, 5) / 20  # distinct scores
    for share, kept in ((0.1, 2), (0.25, 5), (0.01, 1), (1.0, 20)):
        assert int((scores >= cap_threshold(scores, share)).sum()) == kept
