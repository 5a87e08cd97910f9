"""benchmarks.oracle_set: frames from several COCO files in one, each still found and still
carrying its own boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")  # the generator draws with OpenCV (the train extra)

from benchmarks.oracle_set import _source, merge
from split_models.data.coco import CocoFrames
from split_models.data.synthetic import SceneConfig, generate_split


def test_merged_frames_keep_their_pixels_and_boxes(tmp_path: Path) -> None:
    train = generate_split(tmp_path / "a", "train", 3, seed=0)
    shifted = generate_split(tmp_path / "b", "train", 4, seed=0,
                             config=SceneConfig(styles="shifted"))
    out = tmp_path / "merged" / "oracle.json"
    merge(out, [(train, 2), (shifted, None)])
    merged, a, b = CocoFrames(out), CocoFrames(train), CocoFrames(shifted)
    assert len(merged) == 6
    for index, original in [(0, a[0]), (1, a[1]), *((2 + i, b[i]) for i in range(4))]:
        frame = merged[index]
        np.testing.assert_array_equal(frame.image, original.image)
        np.testing.assert_array_equal(frame.boxes, original.boxes)
        np.testing.assert_array_equal(frame.labels, original.labels)
    coco = json.loads(out.read_text())
    assert [i["id"] for i in coco["images"]] == list(range(1, 7))
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    with pytest.raises(ValueError, match="3 frames, 5 asked"):
        merge(out, [(train, 5)])


def test_a_source_names_its_frame_count_after_a_colon() -> None:
    assert _source("out/data/x/train.json:4000") == (Path("out/data/x/train.json"), 4000)
    assert _source("train.json") == (Path("train.json"), None)
