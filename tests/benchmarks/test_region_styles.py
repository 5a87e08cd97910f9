"""benchmarks.region_styles: per style family, the cells the region head keeps and finds. A
threshold of 0 keeps every cell and finds every box cell; one above 1 keeps none; the bundle's
own threshold lies between, and the payload grows with what is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cv2")  # the generator draws with OpenCV (the train extra)

from benchmarks.region_styles import all_probes, measure, render
from device_client.head import HeadRunner
from device_client.scenes import styles

DEMO_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "demo-shapes"


def test_rows_bracket_the_bundles_threshold_between_every_cell_and_none() -> None:
    runner = HeadRunner.load(DEMO_BUNDLE, threads=1)
    runner.set_width(1.0)
    scenes = [s for s in render(all_probes(False)["background checker"], 6) if s.objects][:3]
    assert scenes, "the probe drew no scene with objects"
    every, none = measure(runner, scenes, 0.0), measure(runner, scenes, 1.01)
    own = measure(runner, scenes)
    assert every.kept == 1.0 and every.recall == 1.0
    assert none.kept == 0.0 and none.recall == 0.0
    assert 0.0 < every.boxes < 1.0 and every.boxes == own.boxes == none.boxes
    assert none.kept < own.kept <= every.kept and own.recall is not None
    assert none.payload_bytes < own.payload_bytes <= every.payload_bytes


def test_probes_cover_every_held_out_background_and_optionally_the_training_ones() -> None:
    names = set(all_probes(True))
    assert {f"background {f}" for f in styles.SHIFTED.backgrounds} <= names
    assert {f"train background {f}" for f in styles.TRAIN.backgrounds} <= names
    assert not any(n.startswith("train background") for n in all_probes(False))
