"""Scenes: a background, objects (five classes) and distractors pasted in depth order, occluders,
then the camera. The COCO box of an object is its *visible* extent; objects less than
`min_visible` visible are dropped from the ground truth (they still occlude)."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from device_client.scenes import objects, styles
from device_client.scenes.backgrounds import background, colour
from device_client.scenes.camera import Camera
from device_client.scenes.styles import Families, Styles

CLASSES = ("circle", "square", "triangle", "star", "face")
Image = npt.NDArray[np.uint8]
Rng = np.random.Generator
_DISTRACTOR = -2  # owner id of pixels covered by something that is not an object


@dataclass(frozen=True)
class SceneConfig:
    """How frames are drawn. Sizes in pixels of the output frame."""

    height: int = 240
    width: int = 320
    max_objects: int = 6
    empty_share: float = 0.15
    min_object: int = 14
    max_object: int = 150
    min_visible: float = 0.4
    occluder_share: float = 0.25
    distractor_share: float = 0.4
    styles: Styles = "train"
    # a diagnostic mix (styles.mixed): draws these families instead of `styles`' own
    families: Families | None = None

    def drawn_families(self) -> Families:
        return self.families or styles.families(self.styles)


@dataclass(frozen=True)
class PlacedObject:
    label: int  # index into CLASSES
    box: tuple[float, float, float, float]  # x, y, w, h (COCO) of the visible part
    area: float


@dataclass(frozen=True)
class Scene:
    image: Image  # H × W × 3 RGB
    objects: list[PlacedObject] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)  # which placed object each one is (clips)


def drawable(fam: Families) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(background families, class indices) this install can draw: without scikit-image there
    are no photos and no faces."""
    if styles.have_assets():
        return fam.backgrounds, tuple(range(len(CLASSES)))
    return (tuple(b for b in fam.backgrounds if b != "photo"),
            tuple(i for i, name in enumerate(CLASSES) if name != "face"))


class _Canvas:
    """The frame being composed and, per pixel, which object (if any) is on top."""

    def __init__(self, frame: npt.NDArray[np.float32]) -> None:
        self.frame = frame
        self.owners = np.full(frame.shape[:2], -1, np.int32)

    def paste(self, sprite: objects.Sprite, top: int, left: int, owner: int) -> None:
        height, width = self.owners.shape
        size = sprite.alpha.shape[0]
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + size, height), min(left + size, width)
        if y1 <= y0 or x1 <= x0:
            return
        alpha = sprite.alpha[y0 - top : y1 - top, x0 - left : x1 - left, None]
        rgb = sprite.rgb[y0 - top : y1 - top, x0 - left : x1 - left]
        region = self.frame[y0:y1, x0:x1]
        if sprite.shadow:
            offset = max(2, size // 12)
            shadow = np.zeros_like(alpha[:, :, 0])
            height, width = shadow.shape
            if offset < height and offset < width:  # the visible part, shifted down and right
                shadow[offset:, offset:] = alpha[: height - offset, : width - offset, 0]
            shadow = cv2.GaussianBlur(shadow, (0, 0), max(1.0, size / 25))
            region *= 1 - 0.45 * shadow[:, :, None]
        # An object the colour of what is behind it is invisible to anyone: flip it instead.
        covered = float(alpha.sum())
        if covered > 0:
            behind = (region * alpha).sum(axis=(0, 1)) / covered
            front = (rgb * alpha).sum(axis=(0, 1)) / covered
            if float(np.abs(front - behind).mean()) < 30:
                rgb = 255 - rgb
        region[:] = region * (1 - alpha) + rgb * alpha
        self.owners[y0:y1, x0:x1][alpha[:, :, 0] > 0.3] = owner

    def occluder(self, rng: Rng) -> None:
        """A bar (a pole, a cable) across the frame, hiding what is behind it."""
        height, width = self.owners.shape
        mask = np.zeros((height, width), np.uint8)
        if rng.random() < 0.5:
            p0, p1 = (int(rng.integers(width)), 0), (int(rng.integers(width)), height)
        else:
            p0, p1 = (0, int(rng.integers(height))), (width, int(rng.integers(height)))
        cv2.line(mask, p0, p1, (1.0,), int(rng.integers(4, 14)))
        hidden = mask.astype(bool)
        self.frame[hidden] = colour(rng)
        self.owners[hidden] = _DISTRACTOR

    def visible(self, owner: int, full_area: float, min_visible: float,
                label: int) -> PlacedObject | None:
        mask = self.owners == owner
        area = int(mask.sum())
        if area < min_visible * full_area or area < 16:
            return None
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        return PlacedObject(label, (float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
                            float(area))


def _scene(image: Image, canvas: _Canvas, placed: list[tuple[int, int, float]],
           min_visible: float) -> Scene:
    scene = Scene(image)
    for owner, label, area in placed:
        found = canvas.visible(owner, area, min_visible, label)
        if found is not None:
            scene.objects.append(found)
            scene.ids.append(owner)
    return scene


def _size(rng: Rng, config: SceneConfig) -> int:
    return int(np.exp(rng.uniform(np.log(config.min_object), np.log(config.max_object))))


def render_scene(rng: Rng, config: SceneConfig) -> Scene:
    """One frame and its visible objects."""
    fam = config.drawn_families()
    families_, labels_ = drawable(fam)
    family = families_[int(rng.integers(len(families_)))]
    canvas = _Canvas(background(rng, family, config.height, config.width, fam.photos))
    count = 0 if rng.random() < config.empty_share else int(
        rng.integers(1, config.max_objects + 1))
    distractors = int(rng.integers(1, 4)) if rng.random() < config.distractor_share else 0
    # depth order: objects and distractors interleaved, so either may hide the other
    order = rng.permutation([True] * count + [False] * distractors)
    placed: list[tuple[int, int, float]] = []  # (owner, label, full area)
    for is_object in order:
        if is_object:
            label = labels_[int(rng.integers(len(labels_)))]
            kind = CLASSES[label]
        else:
            label, kind = -1, objects.DISTRACTORS[int(rng.integers(len(objects.DISTRACTORS)))]
        size = _size(rng, config)
        sprite = objects.sprite(kind, size, rng, fam)
        top = int(rng.integers(-size // 4, max(config.height - 3 * size // 4, -size // 4 + 1)))
        left = int(rng.integers(-size // 4, max(config.width - 3 * size // 4, -size // 4 + 1)))
        owner = len(placed) if is_object else _DISTRACTOR
        canvas.paste(sprite, top, left, owner)
        if is_object:
            placed.append((owner, label, float((sprite.alpha > 0.3).sum())))
    if count and rng.random() < config.occluder_share:
        canvas.occluder(rng)
    image = Camera.draw(rng).apply(canvas.frame, rng)
    return _scene(image, canvas, placed, config.min_visible)


class MovingScene:
    """Objects drifting (bouncing off the edges) over a slowly panning background, one camera.

    `frame(t)` is the same for the same seed and config whatever was asked before, so a test can
    rebuild any frame; `with_objects=False` draws the background alone (an empty frame)."""

    def __init__(self, seed: int, config: SceneConfig = SceneConfig(), objects_: int = 3) -> None:
        rng = np.random.default_rng([seed, 99])
        self.config = config
        self.seed = seed
        fam = config.drawn_families()
        families_, labels_ = drawable(fam)
        family = families_[int(rng.integers(len(families_)))]
        self.panorama = background(rng, family, config.height * 3 // 2, config.width * 3 // 2,
                                   fam.photos)
        self.camera = Camera.draw(rng)
        self.sprites: list[tuple[int, objects.Sprite, npt.NDArray[np.float64],
                                 npt.NDArray[np.float64]]] = []
        for _ in range(objects_):
            label = labels_[int(rng.integers(len(labels_)))]
            largest = max(4, min(config.max_object, 100, min(config.height, config.width) // 2))
            size = int(rng.uniform(min(max(config.min_object * 2, 28), largest), largest))
            sprite = objects.sprite(CLASSES[label], size, rng, fam)
            start = rng.uniform([0, 0], [config.width - size, config.height - size])
            velocity = rng.uniform(-3, 3, 2)
            self.sprites.append((label, sprite, start, velocity))

    def frame(self, t: int, with_objects: bool = True, count: int | None = None) -> Scene:
        config = self.config
        pan_x = int((self.panorama.shape[1] - config.width) * (0.5 + 0.5 * np.sin(t / 40)))
        pan_y = (self.panorama.shape[0] - config.height) // 2
        canvas = _Canvas(self.panorama[pan_y : pan_y + config.height,
                                       pan_x : pan_x + config.width].copy())
        shown = self.sprites[: count if count is not None else len(self.sprites)]
        placed = []
        if with_objects:
            for index, (label, sprite, start, velocity) in enumerate(shown):
                size = sprite.alpha.shape[0]
                span = np.array([config.width - size, config.height - size], np.float64)
                # bouncing inside the frame: a triangle wave of the unbounded position
                position = span - np.abs(np.mod(start + velocity * t, 2 * span) - span)
                canvas.paste(sprite, int(position[1]), int(position[0]), index)
                placed.append((index, label, float((sprite.alpha > 0.3).sum())))
        image = self.camera.apply(canvas.frame, np.random.default_rng([self.seed, 7, t]))
        return _scene(image, canvas, placed, 0.0)
