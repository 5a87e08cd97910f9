"""The generated benchmark: deterministic by seed, valid COCO, boxes inside the frames."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from split_models.data.coco import CocoFrames, FolderFrames, open_frames
from split_models.data.synthetic import CLASSES, generate_dataset, generate_video
from tests.training.conftest import SCENE


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate_dataset(tmp_path / name, seed=seed, counts={"val": 4}, config=SCENE)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")


def test_annotations_are_valid_coco_with_boxes_inside(shapes: Path) -> None:
    for split in ("train", "val"):
        coco = COCO(str(shapes / f"{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        images = coco.loadImgs(coco.getImgIds())
        assert images and all((shapes / im["file_name"]).is_file() for im in images)
        counts = [len(coco.getAnnIds(imgIds=[im["id"]])) for im in images]
        assert 0 in counts and max(counts) > 0  # empty frames and frames with objects
        for ann in coco.loadAnns(coco.getAnnIds()):
            image = coco.imgs[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= image["width"] and y + h <= image["height"]


def test_readers_return_rgb_frames_and_contiguous_labels(shapes: Path) -> None:
    frames = open_frames(shapes / "train.json")
    assert isinstance(frames, CocoFrames) and frames.num_classes == len(CLASSES) + 1
    frame = frames[0]
    assert frame.image.shape == (SCENE.height, SCENE.width, 3) and frame.image.dtype == np.uint8
    assert all(1 <= label <= len(CLASSES) for frame in (frames[i] for i in range(len(frames)))
               for label in frame.labels)
    folder = open_frames(shapes / "train")
    assert isinstance(folder, FolderFrames) and len(folder) == len(frames)
    assert not folder[0].labelled


def test_video_has_moving_boxes(tmp_path: Path) -> None:
    path = generate_video(tmp_path / "clip.npz", seed=2, frames=6, config=SCENE, objects=2)
    clip = np.load(path)
    assert clip["frames"].shape == (6, SCENE.height, SCENE.width, 3)
    assert clip["boxes"].shape == (6, 2, 4) and clip["labels"].shape == (2,)
    assert not np.array_equal(clip["boxes"][0], clip["boxes"][-1])


def test_cli_generates_a_dataset(tmp_path: Path) -> None:
    from splitedge.cli import main

    code = main(["dataset", "generate", "--out", str(tmp_path), "--train", "2", "--val", "1",
                 "--test", "1", "--height", "64", "--width", "80"])
    assert code == 0
    assert len(json.loads((tmp_path / "test.json").read_text())["images"]) == 1
