"""The generated detection benchmark ("shapes"): deterministic by seed, written in COCO format.

    splits = generate_dataset("out/data/shapes", seed=0, counts={"train": 1600, "test": 200})
    generate_video("data/shapes/video.npz", seed=1, frames=120)

Objects of five classes (circle, square, triangle, star, face; faces are crops of scikit-image's
bundled LFW subset) at varied scales and rotations, tinted and shaded, are pasted on random crops
of scikit-image's bundled photos (those that load offline). Later objects and occluder bars may
hide parts of earlier ones; the COCO box is the *visible* extent and objects less than 40 %
visible are dropped. A share of frames is empty (the prefilter's negatives). Frame lighting varies
(gain, gamma, a linear shading ramp) and sensor noise is added.

Every image is drawn from its own generator seeded by (seed, split, index), so a split is the same
bytes whichever order or subset is generated. Images are PNG (lossless: the JPEG/WebP baselines
start from the true pixels).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]

CLASSES = ("circle", "square", "triangle", "star", "face")
_SPLIT_SALT = {"train": 1, "val": 2, "test": 3}
# scikit-image photos that ship with the wheel (others need a download this machine cannot make)
_PHOTOS = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "hubble_deep_field",
    "immunohistochemistry", "moon", "page", "text", "retina", "cat", "brick", "grass", "gravel",
    "colorwheel", "clock", "cell",
)


@dataclass(frozen=True)
class SceneConfig:
    """How frames are drawn. Sizes in pixels of the output frame."""

    height: int = 240
    width: int = 320
    max_objects: int = 5
    empty_share: float = 0.2
    min_object: int = 20
    max_object: int = 90
    min_visible: float = 0.4
    occluder_share: float = 0.3
    noise_sigma: float = 4.0


@dataclass(frozen=True)
class PlacedObject:
    label: int  # index into CLASSES
    box: tuple[float, float, float, float]  # x, y, w, h (COCO) of the visible part
    area: float


@cache
def _backgrounds() -> tuple[Image, ...]:
    import skimage.data

    photos = []
    for name in _PHOTOS:
        try:
            photo = np.asarray(getattr(skimage.data, name)())
        except Exception:  # a photo that needs a download: skip it, the others suffice
            continue
        if photo.dtype == bool:
            photo = photo.astype(np.uint8) * 255
        if photo.ndim == 2:
            photo = np.repeat(photo[:, :, None], 3, axis=2)
        photos.append(np.ascontiguousarray(photo[:, :, :3].astype(np.uint8)))
    if not photos:
        raise RuntimeError("no scikit-image photo loads offline; is scikit-image installed?")
    return tuple(photos)


@cache
def _faces() -> npt.NDArray[np.float32]:
    import skimage.data

    # lfw_subset(): 100 faces then 100 non-faces, 25x25 grey in [0, 1]
    return np.asarray(skimage.data.lfw_subset()[:100], dtype=np.float32)


def _background(rng: np.random.Generator, config: SceneConfig) -> Image:
    photos = _backgrounds()
    photo = photos[int(rng.integers(len(photos)))]
    ph, pw = photo.shape[:2]
    aspect = config.width / config.height
    scale = rng.uniform(0.3, 1.0)
    crop_h = max(16, int(min(ph, pw / aspect) * scale))
    crop_w = max(16, int(crop_h * aspect))
    top = int(rng.integers(0, ph - crop_h + 1))
    left = int(rng.integers(0, pw - crop_w + 1))
    crop = photo[top : top + crop_h, left : left + crop_w]
    frame = cv2.resize(crop, (config.width, config.height), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        frame = frame[:, ::-1]
    return np.ascontiguousarray(frame)


def _polygon(kind: str, size: int, angle: float) -> npt.NDArray[np.int32]:
    if kind == "square":
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * 0.72
    elif kind == "triangle":
        t = np.deg2rad([90, 210, 330])
        corners = np.stack([np.cos(t), -np.sin(t)], axis=1)
    else:  # star
        t = np.deg2rad(90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        corners = np.stack([r * np.cos(t), -r * np.sin(t)], axis=1)
    c, s = np.cos(angle), np.sin(angle)
    rotated = corners @ np.array([[c, s], [-s, c]])
    return np.round(rotated * (size / 2 - 1) + size / 2).astype(np.int32)


def _render(kind: str, size: int, rng: np.random.Generator) -> tuple[Image, Mask]:
    """An object sprite (size x size RGB) and its mask."""
    angle = rng.uniform(0, 2 * np.pi)
    mask = np.zeros((size, size), np.uint8)
    if kind == "face":
        faces = _faces()
        face = faces[int(rng.integers(len(faces)))]
        grey = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
        tint = rng.uniform(0.6, 1.0, 3)
        sprite = np.clip(grey[:, :, None] * tint * 255, 0, 255)
        cv2.ellipse(mask, (size // 2, size // 2), (int(size * 0.42), size // 2 - 1), 0, 0, 360,
                    1, -1)
        rotation = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-25, 25), 1.0)
        sprite = cv2.warpAffine(sprite.astype(np.float32), rotation, (size, size))
        mask = cv2.warpAffine(mask, rotation, (size, size), flags=cv2.INTER_NEAREST)
    else:
        if kind == "circle":
            axes = (size // 2 - 1, int((size // 2 - 1) * rng.uniform(0.7, 1.0)))
            cv2.ellipse(mask, (size // 2, size // 2), axes, np.rad2deg(angle), 0, 360, 1, -1)
        else:
            cv2.fillPoly(mask, [_polygon(kind, size, angle)], 1)
        colour = rng.uniform(0, 255, 3)
        second = rng.uniform(0, 255, 3)
        ramp = np.linspace(0, 1, size)[None, :, None] if rng.random() < 0.5 else (
            np.linspace(0, 1, size)[:, None, None]
        )
        sprite = colour * (1 - ramp) + second * ramp * rng.uniform(0, 0.6) + colour * ramp * 0.4
        sprite = np.broadcast_to(sprite, (size, size, 3))
        outline = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        sprite = np.where(outline[:, :, None] > 0, sprite * 0.5, sprite)
    return np.clip(sprite, 0, 255).astype(np.uint8), mask.astype(bool)


def render_scene(rng: np.random.Generator, config: SceneConfig) -> tuple[Image, list[PlacedObject]]:
    """One frame and its visible objects."""
    frame = _background(rng, config).astype(np.float32)
    count = 0 if rng.random() < config.empty_share else int(rng.integers(1, config.max_objects + 1))
    owners = np.full((config.height, config.width), -1, np.int32)
    labels: list[int] = []
    full_areas: list[int] = []
    for index in range(count):
        label = int(rng.integers(len(CLASSES)))
        size = int(np.exp(rng.uniform(np.log(config.min_object), np.log(config.max_object))))
        sprite, mask = _render(CLASSES[label], size, rng)
        top = int(rng.integers(-size // 4, config.height - 3 * size // 4))
        left = int(rng.integers(-size // 4, config.width - 3 * size // 4))
        _paste(frame, owners, sprite, mask, top, left, index)
        labels.append(label)
        full_areas.append(int(mask.sum()))
    if count and rng.random() < config.occluder_share:
        _occluder(frame, owners, rng, config)
    frame = _lighting(frame, rng, config)
    objects = []
    for index, label in enumerate(labels):
        visible = owners == index
        area = int(visible.sum())
        if area < config.min_visible * full_areas[index] or area < 16:
            continue
        ys, xs = np.nonzero(visible)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        objects.append(PlacedObject(label, (float(x0), float(y0), float(x1 - x0),
                                            float(y1 - y0)), float(area)))
    return frame, objects


def _paste(frame: npt.NDArray[np.float32], owners: npt.NDArray[np.int32], sprite: Image,
           mask: Mask, top: int, left: int, owner: int) -> None:
    height, width = owners.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + sprite.shape[0], height), min(left + sprite.shape[1], width)
    if y1 <= y0 or x1 <= x0:
        return
    part = mask[y0 - top : y1 - top, x0 - left : x1 - left]
    region = frame[y0:y1, x0:x1]
    region[part] = sprite[y0 - top : y1 - top, x0 - left : x1 - left][part]
    owners[y0:y1, x0:x1][part] = owner


def _occluder(frame: npt.NDArray[np.float32], owners: npt.NDArray[np.int32],
              rng: np.random.Generator, config: SceneConfig) -> None:
    """A bar (a pole, a cable) across the frame, hiding what is behind it."""
    mask = np.zeros(owners.shape, np.uint8)
    p0 = (int(rng.integers(config.width)), 0)
    p1 = (int(rng.integers(config.width)), config.height)
    if rng.random() < 0.5:
        p0 = (0, int(rng.integers(config.height)))
        p1 = (config.width, int(rng.integers(config.height)))
    cv2.line(mask, p0, p1, 1, int(rng.integers(4, 14)))
    hidden = mask.astype(bool)
    frame[hidden] = rng.uniform(0, 255, 3)
    owners[hidden] = -1


def _lighting(frame: npt.NDArray[np.float32], rng: np.random.Generator,
              config: SceneConfig) -> Image:
    gain = rng.uniform(0.6, 1.3)
    gamma = rng.uniform(0.7, 1.4)
    ramp_axis = np.linspace(-1, 1, config.width)[None, :] if rng.random() < 0.5 else (
        np.linspace(-1, 1, config.height)[:, None]
    )
    shading = 1 + rng.uniform(-0.3, 0.3) * ramp_axis
    lit = 255 * (np.clip(frame / 255, 0, 1) ** gamma) * gain * shading[:, :, None]
    lit += rng.normal(0, config.noise_sigma, lit.shape)
    return np.clip(lit, 0, 255).astype(np.uint8)


def _coco_categories() -> list[dict[str, Any]]:
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)]


def generate_split(out_dir: Path | str, split: str, count: int, seed: int,
                   config: SceneConfig = SceneConfig(),
                   progress: Callable[[int], None] | None = None) -> Path:
    """Write `out_dir/<split>/*.png` and `out_dir/<split>.json`; return the JSON's path."""
    out = Path(out_dir)
    (out / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    salt = _SPLIT_SALT.get(split, sum(split.encode()))
    for index in range(count):
        rng = np.random.default_rng([seed, salt, index])
        frame, objects = render_scene(rng, config)
        file_name = f"{split}/{index:06d}.png"
        ok = cv2.imwrite(str(out / file_name), frame[:, :, ::-1])
        if not ok:
            raise OSError(f"could not write {out / file_name}")
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "height": config.height,
                       "width": config.width})
        for placed in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": placed.label + 1, "bbox": list(placed.box), "area": placed.area,
                "iscrowd": 0,
            })
        if progress is not None:
            progress(1)
    coco = {
        "info": {"description": f"splitedge shapes benchmark, split {split}, seed {seed}"},
        "images": images, "annotations": annotations, "categories": _coco_categories(),
    }
    path = out / f"{split}.json"
    path.write_text(json.dumps(coco, indent=1))
    return path


def generate_dataset(out_dir: Path | str, seed: int, counts: dict[str, int],
                     config: SceneConfig = SceneConfig(),
                     progress: Callable[[int], None] | None = None) -> dict[str, Path]:
    """Every split in `counts`; returns {split: annotation file}."""
    return {split: generate_split(out_dir, split, n, seed, config, progress)
            for split, n in counts.items()}


def generate_video(path: Path | str, seed: int, frames: int = 120,
                   config: SceneConfig = SceneConfig(), objects: int = 3) -> Path:
    """A short clip of objects drifting (and turning) over a slowly panning background.

    Writes `.npz` with `frames` (N, H, W, 3) uint8 RGB and per-frame COCO-style `boxes`
    (N, objects, 4 as x, y, w, h; NaN when off-frame) and `labels`; with an `.mp4` suffix also
    writes the frames through OpenCV's VideoWriter (mp4v), next to the `.npz`.
    """
    rng = np.random.default_rng([seed, 99])
    photos = _backgrounds()
    photo = photos[int(rng.integers(len(photos)))]
    big = cv2.resize(photo, (config.width * 2, config.height * 2))
    sprites = []
    for _ in range(objects):
        label = int(rng.integers(len(CLASSES)))
        size = int(rng.uniform(config.min_object * 1.5, config.max_object))
        sprite, mask = _render(CLASSES[label], size, rng)
        position = rng.uniform([0, 0], [config.width - size, config.height - size])
        velocity = rng.uniform(-3, 3, 2)
        sprites.append((label, sprite, mask, position, velocity))
    clip = np.zeros((frames, config.height, config.width, 3), np.uint8)
    boxes = np.full((frames, objects, 4), np.nan, np.float32)
    for t in range(frames):
        dx = int(config.width * 0.5 * (1 + np.sin(t / frames * np.pi)) / 2)
        frame = big[config.height // 4 : config.height // 4 + config.height,
                    dx : dx + config.width].astype(np.float32)
        owners = np.full((config.height, config.width), -1, np.int32)
        for i, (_, sprite, mask, position, velocity) in enumerate(sprites):
            size = sprite.shape[0]
            position += velocity
            for axis, limit in ((0, config.width - size), (1, config.height - size)):
                if not 0 <= position[axis] <= limit:
                    velocity[axis] *= -1
                    position[axis] = np.clip(position[axis], 0, limit)
            _paste(frame, owners, sprite, mask, int(position[1]), int(position[0]), i)
        for i in range(objects):
            ys, xs = np.nonzero(owners == i)
            if len(xs):
                boxes[t, i] = (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
        clip[t] = np.clip(frame + rng.normal(0, config.noise_sigma, frame.shape), 0, 255)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = np.array([s[0] + 1 for s in sprites], np.int64)
    np.savez_compressed(out.with_suffix(".npz"), frames=clip, boxes=boxes, labels=labels,
                        classes=np.array(CLASSES))
    if out.suffix == ".mp4":
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 15.0,
                                 (config.width, config.height))
        try:
            for frame in clip:
                writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
        finally:
            writer.release()
    return out
