"""Objects as sprites: an RGB layer and an alpha (coverage) layer, drawn in one style.

A sprite's alpha is what covers the background: for an outline-only object it is the ring, so
the interior shows the scene behind it, and the box is still the object's extent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from device_client.scenes import styles
from device_client.scenes.backgrounds import background, colour, f32, photo, value_noise

Layer = npt.NDArray[Any]  # float32; Any: OpenCV's stubs widen dtypes
Rng = np.random.Generator
DISTRACTORS = ("cross", "arrow", "crescent", "bar")


@dataclass(frozen=True)
class Sprite:
    rgb: Layer  # (s, s, 3) in [0, 255]
    alpha: Layer  # (s, s) in [0, 1]
    shadow: bool


def _polygon(kind: str, rng: Rng) -> Layer:
    """Corners on the unit disc, before rotation."""
    if kind == "square":
        stretch = rng.uniform(0.92, 1.08)
        return np.array([[-1, -stretch], [1, -stretch], [1, stretch], [-1, stretch]]) * 0.7
    if kind == "triangle":
        t = np.deg2rad(np.array([90, 210, 330]) + rng.uniform(-12, 12, 3))
        return np.asarray(np.stack([np.cos(t), -np.sin(t)], axis=1) * rng.uniform(0.9, 1.0))
    if kind == "star":
        t = np.deg2rad(90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.36, 0.55))
        return np.stack([r * np.cos(t), -r * np.sin(t)], axis=1)
    if kind == "cross":
        a = rng.uniform(0.18, 0.3)
        return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1],
                         [-a, a], [-1, a], [-1, -a], [-a, -a]]) * 0.9
    if kind == "arrow":
        return np.array([[-1, -0.2], [0.2, -0.2], [0.2, -0.55], [1, 0], [0.2, 0.55],
                         [0.2, 0.2], [-1, 0.2]])
    if kind == "bar":
        return np.array([[-1, -0.28], [1, -0.28], [1, 0.28], [-1, 0.28]])
    raise ValueError(kind)


def shape_mask(kind: str, size: int, rng: Rng, antialias: bool) -> Layer:
    """Coverage of a filled shape in a size×size square, rotated at random."""
    scale = 4 if antialias else 1
    big = size * scale
    canvas = np.zeros((big, big), np.uint8)
    angle = rng.uniform(0, 2 * np.pi)
    centre = (big // 2, big // 2)
    if kind == "circle":
        r = big // 2 - scale
        cv2.ellipse(canvas, centre, (r, int(r * rng.uniform(0.75, 1.0))), float(np.rad2deg(angle)),
                    0, 360, (255.0,), -1)
    elif kind == "crescent":
        r = big // 2 - scale
        cv2.circle(canvas, centre, r, (255.0,), -1)
        shift = int(r * rng.uniform(0.35, 0.6))
        cv2.circle(canvas, (centre[0] + shift, centre[1] - shift // 2), r, (0.0,), -1)
    else:
        corners = _polygon(kind, rng)
        c, s = np.cos(angle), np.sin(angle)
        points = corners @ np.array([[c, s], [-s, c]]) * (big / 2 - scale) + big / 2
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], (255.0,))
    mask = canvas.astype(np.float32) / 255
    if scale > 1:
        mask = f32(cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA))
    return mask


def _ring(mask: Layer, thickness: int) -> Layer:
    kernel = np.ones((2 * thickness + 1, 2 * thickness + 1), np.uint8)
    inner = cv2.erode(mask, kernel)
    return np.clip(mask - inner, 0, 1)


def _direction(size: int, rng: Rng) -> Layer:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    return f32((t - t.min()) / max(float(t.max() - t.min()), 1e-6))


def _mix(a: Layer, b: Layer, t: Layer) -> Layer:
    return f32(a * (1 - t[:, :, None]) + b * t[:, :, None])


_TEXTURES = ("value_noise", "stripes", "sensor_noise", "clutter", "bricks", "hexagons")


def fill(style: str, mask: Layer, rng: Rng, photos: tuple[str, ...]) -> tuple[Layer, Layer]:
    """(rgb, alpha) for a filled `mask` drawn in `style`."""
    size = mask.shape[0]
    base = colour(rng, value=(0.15, 1.0))
    flat = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    alpha = mask
    if style == "flat":
        rgb = flat
    elif style == "gradient":
        rgb = _mix(base, colour(rng), _direction(size, rng))
    elif style == "shaded":  # a lit sphere (or slab): Lambert shading from a random light
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) * 2 - 1
        z = np.sqrt(np.clip(1 - xx**2 - yy**2, 0, 1))
        light = rng.normal(size=3)
        light[2] = abs(light[2]) + 0.5
        light /= np.linalg.norm(light)
        lambert = np.clip(xx * light[0] + yy * light[1] + z * light[2], 0, 1)
        rgb = flat * (0.25 + 0.75 * lambert[:, :, None])
        rgb = rgb + 255 * 0.5 * lambert[:, :, None] ** 20  # a highlight
    elif style == "outline":
        alpha = _ring(mask, int(rng.integers(1, max(2, size // 10) + 1)))
        rgb = flat
    elif style == "noise":
        t = value_noise(rng, size, size, octaves=3, base=int(rng.integers(2, 5)))
        rgb = _mix(base, colour(rng), t)
    elif style == "hatch":
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(3, 10)
        t = ((xx * np.cos(angle) + yy * np.sin(angle)) / period % 1 < 0.5).astype(np.float32)
        rgb = _mix(base, colour(rng), t)
    elif style == "texture":  # camouflage: the object wears a background's texture, so only
        # its contour tells it apart (procedural families of the training set, no photos)
        family = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
        rgb = background(rng, family, size, size, ())
    elif style == "translucent":
        rgb = _mix(base, colour(rng), _direction(size, rng) * rng.uniform(0, 1))
        alpha = mask * rng.uniform(0.5, 0.8)
    elif style == "checker":
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        cell = rng.uniform(2, 8)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
        rgb = _mix(base, colour(rng), t)
    elif style == "dots":
        rgb = flat.copy()
        spacing = rng.uniform(4, 10)
        ink = colour(rng)
        for y in np.arange(spacing / 2, size, spacing):
            for x in np.arange(spacing / 2, size, spacing):
                cv2.circle(rgb, (int(x), int(y)), max(1, int(spacing / 4)),
                           tuple(float(c) for c in ink), -1)
    elif style == "double_outline":
        thickness = int(rng.integers(1, max(2, size // 14) + 1))
        outer = _ring(mask, thickness)
        inner_mask = cv2.erode(mask, np.ones((4 * thickness + 1,) * 2, np.uint8))
        alpha = np.clip(outer + _ring(inner_mask, thickness), 0, 1)
        rgb = flat
    elif style == "photo_texture":
        rgb = photo(rng, size, size, photos) if styles.photos(photos) else _mix(
            base, colour(rng), value_noise(rng, size, size))
    elif style == "glow":
        alpha = cv2.GaussianBlur(mask, (0, 0), max(0.8, size / 14))
        alpha = np.clip(alpha * 1.3, 0, 1)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) * 2 - 1
        rgb = _mix(base, np.minimum(base * 1.6 + 60, 255), np.clip(1 - np.hypot(xx, yy), 0, 1))
    else:
        raise ValueError(f"unknown fill style {style!r}")
    return np.asarray(rgb, np.float32), np.asarray(alpha, np.float32)


def face(size: int, rng: Rng, families: styles.Families, antialias: bool) -> tuple[Layer, Layer]:
    pool = styles.faces()[families.faces]
    grey = cv2.resize(pool[int(rng.integers(len(pool)))], (size, size),
                      interpolation=cv2.INTER_CUBIC)
    grey = np.clip((grey - 0.5) * rng.uniform(0.7, 1.4) + 0.5 + rng.uniform(-0.15, 0.15), 0, 1)
    look = families.face_looks[int(rng.integers(len(families.face_looks)))]
    if look == "grey":
        rgb = np.repeat(grey[:, :, None], 3, axis=2) * 255
    elif look == "skin":
        tone = np.array([rng.uniform(150, 255), rng.uniform(100, 200), rng.uniform(70, 170)])
        rgb = grey[:, :, None] * tone * rng.uniform(0.8, 1.2)
    elif look == "tint":
        rgb = grey[:, :, None] * colour(rng, saturation=(0.2, 0.8), value=(0.6, 1.0))
    elif look == "false_colour":
        maps = (cv2.COLORMAP_JET, cv2.COLORMAP_VIRIDIS, cv2.COLORMAP_HOT, cv2.COLORMAP_OCEAN)
        mapped = cv2.applyColorMap((grey * 255).astype(np.uint8), maps[int(rng.integers(4))])
        rgb = mapped[:, :, ::-1].astype(np.float32)
    elif look == "posterized":
        levels = float(rng.integers(3, 5))
        rgb = np.repeat(np.round(grey * levels)[:, :, None] / levels, 3, axis=2) * 255
        rgb = rgb * colour(rng, saturation=(0.0, 0.5), value=(0.7, 1.0)) / 255
    elif look == "inverted":
        rgb = np.repeat((1 - grey)[:, :, None], 3, axis=2) * colour(rng, value=(0.6, 1.0))
    else:
        raise ValueError(look)
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    extra = families.face_extras[int(rng.integers(len(families.face_extras)))]
    if extra == "mask":  # a surgical mask over mouth and nose
        top = int(size * rng.uniform(0.52, 0.62))
        cv2.rectangle(rgb, (int(size * 0.15), top), (int(size * 0.85), int(size * 0.92)),
                      tuple(float(c) for c in colour(rng, value=(0.5, 1.0))), -1)
    elif extra == "sunglasses":
        y = int(size * rng.uniform(0.3, 0.4))
        cv2.rectangle(rgb, (int(size * 0.12), y), (int(size * 0.88), y + max(2, size // 7)),
                      (20.0, 20.0, 25.0), -1)
    scale = 4 if antialias else 1
    canvas = np.zeros((size * scale, size * scale), np.uint8)
    if rng.random() < 0.7:  # an oval crop; otherwise the face box itself
        cv2.ellipse(canvas, (size * scale // 2, size * scale // 2),
                    (int(size * scale * 0.42), size * scale // 2 - scale), 0, 0, 360, (255.0,),
                    -1)
    else:
        canvas[:] = 255
    alpha = canvas.astype(np.float32) / 255
    if scale > 1:
        alpha = f32(cv2.resize(alpha, (size, size), interpolation=cv2.INTER_AREA))
    rotation = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-25, 25), 1.0)
    rgb = f32(cv2.warpAffine(rgb, rotation, (size, size)))
    alpha = f32(cv2.warpAffine(alpha, rotation, (size, size)))
    return rgb, alpha


def sprite(kind: str, size: int, rng: Rng, families: styles.Families) -> Sprite:
    """A class object or a distractor, in one of `families`' styles."""
    antialias = rng.random() < 0.6
    if kind == "face":
        rgb, alpha = face(size, rng, families, antialias)
    else:
        mask = shape_mask(kind, size, rng, antialias)
        style = families.fills[int(rng.integers(len(families.fills)))]
        rgb, alpha = fill(style, mask, rng, families.photos)
        if rng.random() < 0.3 and style not in ("outline", "double_outline", "glow"):
            rim = _ring(mask, max(1, size // 30))  # a dark (or light) rim
            tone = 0.35 if rng.random() < 0.75 else 1.8
            rgb = np.clip(rgb * (1 - rim[:, :, None]) + rgb * tone * rim[:, :, None], 0, 255)
    return Sprite(np.asarray(rgb, np.float32), np.asarray(alpha, np.float32),
                  shadow=rng.random() < 0.25)
