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
