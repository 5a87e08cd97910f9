"""benchmarks.latent_bits splits a frame's bits between objects and background: the two parts
add up to what the coder writes, and a frame without objects has no object positions."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cv2")  # the generator draws with OpenCV (the train extra)

from benchmarks.latent_bits import bits_by_region
from split_models.data.synthetic import SceneConfig, generate_dataset

DEMO_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "demo-shapes"


def test_object_and_background_bits_add_up_to_the_payload(tmp_path: Path) -> None:
    generate_dataset(tmp_path, seed=5, counts={"test": 4},
                     config=SceneConfig(height=240, width=320, empty_share=0.0))
    rows = bits_by_region(DEMO_BUNDLE, tmp_path / "test.json", 4)
    assert [r["width"] for r in rows] == sorted(r["width"] for r in rows)
    for row in rows:
        ideal = row["objects_bytes"] + row["background_bytes"]
        # the coder's words flush its state and round to 32 bits: a few bytes over the ideal
        assert ideal <= row["payload_bytes"] <= ideal * 1.05 + 16, row
        assert row["objects_positions"] > 0 and row["background_positions"] > 0
        assert row["objects_positions"] + row["background_positions"] == 32 * 40  # 256 x 320
    assert rows[-1]["objects_bytes"] > rows[0]["objects_bytes"]  # wider latent, more bits


def test_a_frame_without_objects_is_all_background(tmp_path: Path) -> None:
    generate_dataset(tmp_path, seed=6, counts={"test": 2},
                     config=SceneConfig(height=240, width=320, empty_share=1.0))
    for row in bits_by_region(DEMO_BUNDLE, tmp_path / "test.json", 2):
        assert row["objects_positions"] == 0 and row["objects_bytes"] == 0
        assert row["background_bytes"] > 0
