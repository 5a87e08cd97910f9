"""The generated detection benchmark ("shapes"): deterministic by seed, written in COCO format.

    splits = generate_dataset("out/data/shapes", seed=0, counts={"train": 4000, "test": 200})
    generate_split("out/data/shapes-shifted", "test", 200, seed=0,
                   config=SceneConfig(styles="shifted"))          # the held-out styles
    generate_video("data/shapes/video.npz", seed=1, frames=120)

Scenes are drawn by `device_client.scenes` (the device's `generated` source uses the same
renderer): five classes (circle, square, triangle, star, face) over backgrounds of several
families, objects in many renderings, scales 14–150 px, occlusion, distractor shapes, and camera
effects; ≈ 15 % of frames are empty (the prefilter's negatives). `styles="shifted"` draws only
families the training styles never draw (the table in `device_client/scenes/styles.py`), so the
shifted test set measures generalization, not memory of the generator.

Every image is drawn from its own generator seeded by (seed, styles, split, index), so a split is
the same bytes whichever order or subset is generated. Images are PNG (lossless: the JPEG/WebP
baselines start from the true pixels).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device_client.scenes import CLASSES, MovingScene, SceneConfig, render_scene

__all__ = ["CLASSES", "SceneConfig", "generate_dataset", "generate_split", "generate_video"]

DEFAULT_SCENE = SceneConfig()
_SPLIT_SALT = {"train": 1, "val": 2, "test": 3}
_STYLES_SALT = {"train": 0, "shifted": 1000}


def _coco_categories() -> list[dict[str, Any]]:
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)]


def generate_split(out_dir: Path | str, split: str, count: int, seed: int,
                   config: SceneConfig = DEFAULT_SCENE,
                   progress: Callable[[int], None] | None = None, workers: int = 1) -> Path:
    """Write `out_dir/<split>/*.png` and `out_dir/<split>.json`; return the JSON's path. With
    `workers` > 1 frames are drawn in that many processes: the same bytes (each frame has its
    own generator), in a fraction of the time (`make bundle`'s data step on 2 cores)."""
    out = Path(out_dir)
    (out / split).mkdir(parents=True, exist_ok=True)
    salt = _SPLIT_SALT.get(split, sum(split.encode())) + _STYLES_SALT[config.styles]
    jobs = [(out, split, seed, salt, index, config) for index in range(count)]
    if workers > 1 and count > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            drawn = pool.map(_draw, jobs, chunksize=max(1, min(64, count // (4 * workers))))
            placed = _collect(drawn, progress)
    else:
        placed = _collect(map(_draw, jobs), progress)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index, objects in enumerate(placed):
        image_id = index + 1
        images.append({"id": image_id, "file_name": f"{split}/{index:06d}.png",
                       "height": config.height, "width": config.width})
        for label, box, area in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": label + 1, "bbox": box, "area": area, "iscrowd": 0,
            })
    coco = {
        "info": {"description": f"splitedge shapes benchmark, split {split}, seed {seed}, "
                                f"styles {config.styles}"
                                + (f", backgrounds {', '.join(config.families.backgrounds)}"
                                   if config.families is not None else "")},
        "images": images, "annotations": annotations, "categories": _coco_categories(),
    }
    path = out / f"{split}.json"
    path.write_text(json.dumps(coco, indent=1))
    return path


_Placed = list[tuple[int, list[Any], Any]]  # per object: label, COCO box, area


def _draw(job: tuple[Path, str, int, int, int, SceneConfig]) -> _Placed:
    """One frame: drawn from its own generator, written as PNG; its objects returned."""
    out, split, seed, salt, index, config = job
    scene = render_scene(np.random.default_rng([seed, salt, index]), config)
    path = out / f"{split}/{index:06d}.png"
    if not cv2.imwrite(str(path), scene.image[:, :, ::-1]):
        raise OSError(f"could not write {path}")
    return [(placed.label, list(placed.box), placed.area) for placed in scene.objects]


def _collect(drawn: Iterable[_Placed], progress: Callable[[int], None] | None) -> list[_Placed]:
    placed = []
    for objects in drawn:
        placed.append(objects)
        if progress is not None:
            progress(1)
    return placed


def generate_dataset(out_dir: Path | str, seed: int, counts: dict[str, int],
                     config: SceneConfig = DEFAULT_SCENE,
                     progress: Callable[[int], None] | None = None,
                     workers: int = 1) -> dict[str, Path]:
    """Every split in `counts`; returns {split: annotation file}."""
    return {split: generate_split(out_dir, split, n, seed, config, progress, workers)
            for split, n in counts.items()}


def generate_video(path: Path | str, seed: int, frames: int = 120,
                   config: SceneConfig = DEFAULT_SCENE, objects: int = 3) -> Path:
    """A short clip of objects drifting over a slowly panning background (`MovingScene`).

    Writes `.npz` with `frames` (N, H, W, 3) uint8 RGB and per-frame COCO-style `boxes`
    (N, objects, 4 as x, y, w, h; NaN when hidden) and `labels`; with an `.mp4` suffix also
    writes the frames through OpenCV's VideoWriter (mp4v), next to the `.npz`.
    """
    scene = MovingScene(seed, config, objects)
    clip = np.zeros((frames, config.height, config.width, 3), np.uint8)
    boxes = np.full((frames, objects, 4), np.nan, np.float32)
    for t in range(frames):
        drawn = scene.frame(t)
        clip[t] = drawn.image
        for index, placed in zip(drawn.ids, drawn.objects, strict=True):
            boxes[t, index] = placed.box
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = np.array([label + 1 for label, *_ in scene.sprites], np.int64)
    np.savez_compressed(out.with_suffix(".npz"), frames=clip, boxes=boxes, labels=labels,
                        classes=np.array(CLASSES))
    if out.suffix == ".mp4":
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), 15.0,
                                 (config.width, config.height))
        try:
            for frame in clip:
                writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
        finally:
            writer.release()
    return out
