"""The generated benchmark: deterministic by seed, valid COCO, boxes inside the frames."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
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


def test_frames_drawn_in_several_processes_are_the_same_bytes(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "one", seed=5, counts={"val": 6, "test": 3}, config=SCENE)
    generate_dataset(tmp_path / "two", seed=5, counts={"val": 6, "test": 3}, config=SCENE,
                     workers=2)
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")
    assert len(_digests(tmp_path / "two")) == 6 + 3 + 2  # every frame and both .json


def test_annotations_are_valid_coco_with_boxes_inside(shapes: Path) -> None:
    counts: list[int] = []
    for split in ("train", "val"):
        coco = COCO(str(shapes / f"{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        images = coco.loadImgs(coco.getImgIds())
        assert images and all((shapes / im["file_name"]).is_file() for im in images)
        counts += [len(coco.getAnnIds(imgIds=[im["id"]])) for im in images]
        for ann in coco.loadAnns(coco.getAnnIds()):
            image = coco.imgs[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= image["width"] and y + h <= image["height"]
    assert 0 in counts and max(counts) > 0  # empty frames and frames with objects


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


def test_the_shifted_set_draws_only_held_out_styles(tmp_path: Path) -> None:
    from device_client.scenes import styles
    from split_models.data.synthetic import generate_split

    train, shifted = styles.families("train"), styles.families("shifted")
    # by construction: no background family but "photo", no fill, no face look shared; the
    # photo family draws other photos and the faces other identities
    assert set(train.backgrounds) & set(shifted.backgrounds) == {"photo"}
    assert not set(train.fills) & set(shifted.fills)
    assert not set(train.face_looks) & set(shifted.face_looks)
    assert not set(train.photos) & set(shifted.photos)
    assert set(range(100)[train.faces]).isdisjoint(range(100)[shifted.faces])
    generate_split(tmp_path / "a", "test", 3, seed=5, config=SCENE)
    b = generate_split(tmp_path / "b", "test", 3, seed=5,
                       config=dataclasses.replace(SCENE, styles="shifted"))
    assert "styles shifted" in json.loads(b.read_text())["info"]["description"]
    assert _digests(tmp_path / "a") != _digests(tmp_path / "b")


def test_a_diagnostic_mix_shifts_only_the_parts_it_names() -> None:
    """`styles.mixed` (what benchmarks.style_shift renders): each part comes from the shifted
    set only when named, and a scene drawn with a mix is the scene its families make."""
    from device_client.scenes import render, styles

    assert styles.mixed([]) == styles.TRAIN
    assert styles.mixed(styles.SHIFTABLE) == styles.SHIFTED
    fills_only = styles.mixed(["fills"])
    assert fills_only.fills == styles.SHIFTED.fills
    assert fills_only.backgrounds == styles.TRAIN.backgrounds
    assert fills_only.faces == styles.TRAIN.faces
    with pytest.raises(ValueError, match="unknown parts"):
        styles.mixed(["camera"])
    shifted = render.render_scene(np.random.default_rng(4), dataclasses.replace(
        SCENE, styles="shifted"))
    as_mix = render.render_scene(np.random.default_rng(4), dataclasses.replace(
        SCENE, families=styles.mixed(styles.SHIFTABLE)))
    trained = render.render_scene(np.random.default_rng(4), SCENE)
    assert np.array_equal(shifted.image, as_mix.image)
    assert not np.array_equal(shifted.image, trained.image)


def test_every_style_family_draws(tmp_path: Path) -> None:
    """Each background family and fill renders (a family that raised would never be drawn by a
    small sample) and an object's box covers its pixels."""
    from device_client.scenes import backgrounds, objects, styles

    rng = np.random.default_rng(0)
    for fam in (styles.families("train"), styles.families("shifted")):
        for family in fam.backgrounds + styles.EXTRA_BACKGROUNDS:
            canvas = backgrounds.background(rng, family, 48, 64, fam.photos)
            assert canvas.shape == (48, 64, 3) and np.isfinite(canvas).all()
        for fill in fam.fills:
            mask = objects.shape_mask("star", 40, rng, antialias=True)
            rgb, alpha = objects.fill(fill, mask, rng, fam.photos)
            assert rgb.shape == (40, 40, 3) and alpha.shape == (40, 40)
            assert 0 < alpha.max() <= 1 and alpha.sum() <= mask.sum() * 1.6
        for _ in range(6):
            rgb, alpha = objects.face(32, rng, fam, antialias=False)
            assert rgb.shape == (32, 32, 3) and alpha.max() > 0


def test_clutter_text_draws_the_same_pixels_on_opencv_4_and_5(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # OpenCV 5 refuses text on float canvases; its path (an 8-bit mask filled with the ink) must
    # give the pixels 4.x draws on the float canvas itself
    from device_client.scenes import backgrounds

    opencv_4 = int(cv2.__version__.split(".")[0]) < 5
    drawn = []
    for text_on_float in ((True, False) if opencv_4 else (False,)):
        monkeypatch.setattr(backgrounds, "_TEXT_ON_FLOAT", text_on_float)
        canvas = np.full((40, 120, 3), 0.2, np.float32)
        backgrounds._put_text(canvas, "SPLIT", (4, 30), 1.0, (0.9, 0.1, 0.5), 2)
        drawn.append(canvas)
    inked = np.abs(drawn[-1] - 0.2).max(axis=2) > 0
    assert 50 < inked.sum() < inked.size // 2  # letters, not a blot
    assert np.allclose(drawn[-1][inked], (0.9, 0.1, 0.5))
    if opencv_4:
        np.testing.assert_array_equal(drawn[0], drawn[1])


def test_extra_backgrounds_are_opt_in_and_keep_the_held_out_families_held_out(
    tmp_path: Path,
) -> None:
    """`--extra-backgrounds motifs`: a training set may add wallpaper backgrounds; neither style
    set draws them unasked, and they repeat no square (the held-out checker family's tile)."""
    from device_client.scenes import backgrounds, styles
    from split_models.data.synthetic import generate_split

    assert not set(styles.EXTRA_BACKGROUNDS) & (set(styles.TRAIN.backgrounds)
                                               | set(styles.SHIFTED.backgrounds))
    assert "square" not in backgrounds._MOTIFS
    plus = styles.with_backgrounds(styles.TRAIN, ["motifs"])
    assert plus.backgrounds == (*styles.TRAIN.backgrounds, "motifs")
    assert dataclasses.replace(plus, backgrounds=styles.TRAIN.backgrounds) == styles.TRAIN
    with pytest.raises(ValueError, match="unknown extra backgrounds"):
        styles.with_backgrounds(styles.TRAIN, ["checker"])
    # the same seeds draw other frames: each frame's family draw has one more choice
    plain = generate_split(tmp_path / "a", "train", 12, seed=0, config=SCENE)
    extra = generate_split(tmp_path / "b", "train", 12, seed=0, config=dataclasses.replace(
        SCENE, families=plus))
    assert "motifs" in json.loads(extra.read_text())["info"]["description"]
    assert "motifs" not in json.loads(plain.read_text())["info"]["description"]
    assert _digests(tmp_path / "a") != _digests(tmp_path / "b")
