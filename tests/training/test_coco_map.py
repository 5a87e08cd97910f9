"""mAP on hand-made cases with a known answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from split_models.evaluation.coco_map import Prediction, coco_map
from split_models.evaluation.report import Row, below_curve, best_bytes_at, bytes_at


@pytest.fixture
def annotations(tmp_path: Path) -> Path:
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 100, "width": 100},
                   {"id": 2, "file_name": "b.png", "height": 100, "width": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 30, 30], "area": 900,
             "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 9, "bbox": [50, 40, 20, 40], "area": 800,
             "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "circle"}, {"id": 9, "name": "square"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    return path


def _truth(dx: float = 0.0) -> list[Prediction]:
    return [Prediction(1, (10 + dx, 10, 40 + dx, 40), 0.9, 7),
            Prediction(2, (50 + dx, 40, 70 + dx, 80), 0.8, 9)]


def test_perfect_predictions_score_one(annotations: Path) -> None:
    assert coco_map(annotations, _truth()) == pytest.approx({"map": 1.0, "map50": 1.0})


def test_shifted_boxes_score_lower(annotations: Path) -> None:
    shifted = coco_map(annotations, _truth(dx=6))
    assert 0 < shifted["map"] < 1.0
    assert shifted["map50"] == pytest.approx(1.0)  # IoU still above .5
    far = coco_map(annotations, _truth(dx=25))
    assert far["map50"] < 0.5


def test_wrong_class_and_no_predictions_score_zero(annotations: Path) -> None:
    wrong = [Prediction(p.image_id, p.box, p.score, 16 - p.category_id) for p in _truth()]
    assert coco_map(annotations, wrong)["map"] == 0.0
    assert coco_map(annotations, []) == {"map": 0.0, "map50": 0.0}


def test_bytes_at_interpolates_in_log_bytes() -> None:
    curve = [Row("jpeg", "q10", 1.0, 0.1, 0.2), Row("jpeg", "q50", 4.0, 0.3, 0.5),
             Row("jpeg", "q90", 16.0, 0.29, 0.5)]
    assert bytes_at(curve, 0.2) == pytest.approx(2.0)
    assert bytes_at(curve, 0.05) == pytest.approx(1.0)
    assert bytes_at(curve, 0.35) is None


def test_a_target_below_the_cheapest_setting_is_an_upper_bound() -> None:
    curve = [Row("webp", "q5", 1.5, 0.3, 0.4), Row("webp", "q50", 5.0, 0.4, 0.5)]
    assert bytes_at(curve, 0.2) == pytest.approx(1.5) and below_curve(curve, 0.2)
    assert not below_curve(curve, 0.35) and bytes_at(curve, 0.35) > 1.5


def test_the_best_codec_is_the_cheapest_single_codec_at_that_accuracy() -> None:
    """A JPEG point just above the target must not drag WebP's interpolation up: the best is
    the fewest bytes one codec's own curve needs (as bundle v8's width 1.0 first showed)."""
    curves = {
        "webp": [Row("webp", "q30", 3.767, 0.388, 0.5), Row("webp", "q50", 5.355, 0.400, 0.6)],
        "jpeg": [Row("jpeg", "q20", 4.21, 0.385, 0.5), Row("jpeg", "q30", 5.316, 0.391, 0.6)],
    }
    best, at_most = best_bytes_at(curves, 0.390)
    assert best == pytest.approx(bytes_at(curves["webp"], 0.390)) and not at_most
    assert best < bytes_at(curves["jpeg"], 0.390)  # type: ignore[operator]
    cheap = {"webp": [Row("webp", "q5", 1.9, 0.34, 0.5)],
             "jpeg": [Row("jpeg", "q5", 2.4, 0.35, 0.5)]}
    assert best_bytes_at(cheap, 0.30) == (pytest.approx(1.9), True)
    assert best_bytes_at(cheap, 0.5) == (None, False)
