"""Backgrounds, one function per family (see styles.py). Each returns float32 RGB in [0, 255]."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from device_client.scenes import styles

Canvas = npt.NDArray[Any]  # float32 RGB; Any: OpenCV's stubs widen dtypes
Rng = np.random.Generator


def f32(array: Any) -> Canvas:
    """float32, typed: numpy's and OpenCV's stubs lose the dtype through arithmetic."""
    return np.asarray(array, dtype=np.float32)


def colour(rng: Rng, saturation: tuple[float, float] = (0.0, 1.0),
           value: tuple[float, float] = (0.1, 1.0)) -> npt.NDArray[Any]:
    """A random colour, drawn in HSV so greys, pastels and saturated colours all occur."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*saturation) * 255,
                      rng.uniform(*value) * 255]]], np.float32)
    return f32(cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0])


def value_noise(rng: Rng, height: int, width: int, octaves: int = 4,
                base: int | None = None) -> Canvas:
    """Multi-octave smooth noise in [0, 1] (bilinear upsampling of random grids)."""
    cells = base or int(rng.integers(2, 6))
    total = np.zeros((height, width), np.float32)
    weight, norm = 1.0, 0.0
    for octave in range(octaves):
        n = cells * 2**octave
        grid = rng.random((n + 1, int(n * width / height) + 2)).astype(np.float32)
        total += weight * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        norm += weight
        weight *= rng.uniform(0.4, 0.65)
    return np.clip(total / norm, 0, 1)


def _ramp(a: npt.NDArray[Any], b: npt.NDArray[Any], t: npt.NDArray[Any]) -> Canvas:
    return f32(a * (1 - t[:, :, None]) + b * t[:, :, None])


def _coords(height: int, width: int, angle: float) -> Canvas:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return f32(xx * np.cos(angle) + yy * np.sin(angle))


def photo(rng: Rng, height: int, width: int, names: tuple[str, ...]) -> Canvas:
    pool = styles.photos(names)
    picture = pool[int(rng.integers(len(pool)))]
    ph, pw = picture.shape[:2]
    aspect = width / height
    scale = rng.uniform(0.25, 1.0)
    crop_h = max(16, int(min(ph, pw / aspect) * scale))
    crop_w = max(16, int(crop_h * aspect))
    top = int(rng.integers(0, ph - crop_h + 1))
    left = int(rng.integers(0, pw - crop_w + 1))
    crop = picture[top : top + crop_h, left : left + crop_w]
    frame = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    if rng.random() < 0.5:
        frame = frame[:, ::-1]
    if rng.random() < 0.3:  # recoloured: a channel swap keeps the structure, changes the look
        frame = frame[:, :, rng.permutation(3)]
    return np.ascontiguousarray(frame)


def _value_noise_bg(rng: Rng, height: int, width: int) -> Canvas:
    t = value_noise(rng, height, width)
    return _ramp(colour(rng), colour(rng), t)


def _gradient(rng: Rng, height: int, width: int) -> Canvas:
    if rng.random() < 0.5:
        t = _coords(height, width, rng.uniform(0, 2 * np.pi))
    else:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        t = np.hypot(yy - cy, xx - cx).astype(np.float32)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    canvas = _ramp(colour(rng), colour(rng), t)
    if rng.random() < 0.5:
        canvas = _ramp(canvas, np.broadcast_to(colour(rng), canvas.shape), t**3 * 0.7)
    return canvas


def _sensor_noise(rng: Rng, height: int, width: int) -> Canvas:
    canvas = np.broadcast_to(colour(rng), (height, width, 3)).astype(np.float32)
    canvas = canvas + rng.normal(0, rng.uniform(12, 40), (height, width, 3)).astype(np.float32)
    if rng.random() < 0.4:  # salt and pepper
        dots = rng.random((height, width)) < rng.uniform(0.01, 0.05)
        canvas[dots] = rng.choice([0.0, 255.0], size=(int(dots.sum()), 1))
    return canvas


def _flat(rng: Rng, height: int, width: int) -> Canvas:
    return np.broadcast_to(colour(rng), (height, width, 3)).astype(np.float32).copy()


def _stripes(rng: Rng, height: int, width: int) -> Canvas:
    period = rng.uniform(6, 60)
    t = _coords(height, width, rng.uniform(0, np.pi)) / period
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * t)
    if rng.random() < 0.5:
        wave = (wave > 0.5).astype(np.float32)
    return _ramp(colour(rng), colour(rng), wave.astype(np.float32))


# OpenCV 5 draws text on 8-bit images only. 4.x draws it on float canvases too, without
# anti-aliasing (LINE_AA is for 8-bit images): the same pixels as an 8-bit LINE_8 mask filled with
# the ink, which is what 5.x gets, so text looks the same on both. (Other shapes' anti-aliasing
# still differs between them: the benchmark pins OpenCV in constraints.txt.)
_TEXT_ON_FLOAT = int(cv2.__version__.split(".")[0]) < 5


def _put_text(canvas: Canvas, text: str, origin: tuple[int, int], scale: float,
              ink: tuple[float, ...], thickness: int) -> None:
    if _TEXT_ON_FLOAT:
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness,
                    cv2.LINE_AA)
        return
    mask = np.zeros(canvas.shape[:2], np.uint8)
    cv2.putText(mask, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255,), thickness, cv2.LINE_8)
    canvas[mask > 0] = ink


def _clutter(rng: Rng, height: int, width: int) -> Canvas:
    """Lines, arcs, text and dots over a plain or noisy base: edges everywhere, no objects."""
    canvas = (_gradient if rng.random() < 0.5 else _value_noise_bg)(rng, height, width)
    for _ in range(int(rng.integers(8, 30))):
        ink = tuple(float(c) for c in colour(rng))
        kind = rng.random()
        thickness = int(rng.integers(1, 4))
        if kind < 0.35:
            p0 = (int(rng.integers(width)), int(rng.integers(height)))
            p1 = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.line(canvas, p0, p1, ink, thickness, cv2.LINE_AA)
        elif kind < 0.6:
            centre = (int(rng.integers(width)), int(rng.integers(height)))
            axes = (int(rng.integers(5, 60)), int(rng.integers(5, 60)))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), start,
                        start + float(rng.uniform(30, 200)), ink, thickness, cv2.LINE_AA)
        elif kind < 0.85:
            text = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(2, 8))))
            _put_text(canvas, text, (int(rng.integers(width)), int(rng.integers(height))),
                      float(rng.uniform(0.3, 1.2)), ink, thickness)
        else:
            cv2.circle(canvas, (int(rng.integers(width)), int(rng.integers(height))),
                       int(rng.integers(1, 4)), ink, -1, cv2.LINE_AA)
    return canvas


def _plasma(rng: Rng, height: int, width: int) -> Canvas:
    total = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(3, 6))):
        total += np.sin(_coords(height, width, rng.uniform(0, 2 * np.pi))
                        / rng.uniform(8, 50) + rng.uniform(0, 6.3))
    t = (total - total.min()) / max(float(total.max() - total.min()), 1e-6)
    hue = (t * rng.uniform(60, 180) + rng.uniform(0, 180)) % 180
    hsv = np.stack([hue, np.full_like(t, rng.uniform(60, 255)),
                    120 + 120 * t * rng.uniform(0.3, 1.0)], -1)
    return f32(cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB))


def _checker(rng: Rng, height: int, width: int) -> Canvas:
    cell = rng.uniform(8, 40)
    angle = rng.uniform(0, np.pi / 2)
    u = _coords(height, width, angle) / cell
    v = _coords(height, width, angle + np.pi / 2) / cell
    parity = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    canvas = _ramp(colour(rng), colour(rng), parity)
    if rng.random() < 0.5:  # grout lines
        grout = (np.minimum(u % 1, v % 1) < rng.uniform(0.04, 0.12))
        canvas[grout] = colour(rng)
    return canvas


def _cells(rng: Rng, height: int, width: int) -> Canvas:
    count = int(rng.integers(6, 40))
    seeds = rng.uniform([0, 0], [height, width], (count, 2)).astype(np.float32)
    yy, xx = np.mgrid[0:height:2, 0:width:2].astype(np.float32)  # half resolution: cheap
    distance = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    owner = np.argmin(distance, axis=0)
    palette = np.stack([colour(rng) for _ in range(count)])
    small = palette[owner].astype(np.float32)
    return f32(cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST))


def _blobs(rng: Rng, height: int, width: int) -> Canvas:
    canvas = _flat(rng, height, width)
    for _ in range(int(rng.integers(4, 14))):
        layer = np.zeros((height, width), np.float32)
        cv2.ellipse(layer, (int(rng.integers(width)), int(rng.integers(height))),
                    (int(rng.integers(15, 90)), int(rng.integers(15, 90))),
                    float(rng.uniform(0, 180)), 0, 360, (1.0,), -1)
        layer = f32(cv2.GaussianBlur(layer, (0, 0), rng.uniform(6, 20)))
        canvas = _ramp(canvas, np.broadcast_to(colour(rng), canvas.shape).astype(np.float32),
                       layer * rng.uniform(0.5, 1.0))
    return canvas


# Tessellations: frames tiled edge to edge with flat polygons teach the detector that a square or
# triangle *in a tiling* is background, not an object. They differ from the held-out checker and
# Voronoi families by construction (offset rows, hexagons, recursive splits).
def _tile_colours(rng: Rng, count: int) -> npt.NDArray[Any]:
    """`count` tile colours: one hue family jittered (a real wall or floor), or all random."""
    if rng.random() < 0.5:
        return np.stack([colour(rng) for _ in range(count)])
    base = colour(rng)
    return f32(np.clip(base + rng.normal(0, rng.uniform(5, 35), (count, 3)), 0, 255))


def _tiled(rng: Rng, height: int, width: int, index: npt.NDArray[Any],
           edge: npt.NDArray[Any]) -> Canvas:
    """Colour each tile `index` (ints) and draw the mortar where `edge` is true."""
    ids, owner = np.unique(index, return_inverse=True)
    canvas = f32(_tile_colours(rng, len(ids))[owner.reshape(height, width)])
    if rng.random() < 0.7:
        canvas[edge] = colour(rng)
    return canvas


def _bricks(rng: Rng, height: int, width: int) -> Canvas:
    """Running bond: rows of rectangles, each row shifted by half a brick."""
    brick_h = rng.uniform(8, 36)
    brick_w = brick_h * rng.uniform(1.5, 3.5)
    angle = rng.uniform(-0.4, 0.4) + (np.pi / 2 if rng.random() < 0.2 else 0.0)
    u = _coords(height, width, angle) / brick_w
    v = _coords(height, width, angle + np.pi / 2) / brick_h
    row = np.floor(v)
    shifted = u + 0.5 * (row % 2)
    index = row * 10_000 + np.floor(shifted)
    mortar = rng.uniform(0.03, 0.1)
    edge = (v % 1 < mortar * brick_w / brick_h) | (shifted % 1 < mortar)
    return _tiled(rng, height, width, index.astype(np.int64), edge)


def _hexagons(rng: Rng, height: int, width: int) -> Canvas:
    """A honeycomb: each pixel belongs to the nearest centre of a hexagonal lattice."""
    radius = rng.uniform(8, 30)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    q = (np.sqrt(3) / 3 * xx - yy / 3) / radius  # axial coordinates, then cube rounding
    r = (2 / 3 * yy) / radius
    x, z = q, r
    y = -x - z
    rx, ry, rz = np.round(x), np.round(y), np.round(z)
    dx, dy, dz = np.abs(rx - x), np.abs(ry - y), np.abs(rz - z)
    fix_x = (dx > dy) & (dx > dz)
    fix_z = ~fix_x & (dz >= dy)
    rx = np.where(fix_x, -ry - rz, rx)
    rz = np.where(fix_z, -rx - ry, rz)
    index = (rx * 10_000 + rz).astype(np.int64)
    edge = np.zeros((height, width), bool)
    edge[:-1] |= index[:-1] != index[1:]
    edge[:, :-1] |= index[:, :-1] != index[:, 1:]
    edge = cv2.dilate(edge.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)
    return _tiled(rng, height, width, index, edge)


def _mondrian(rng: Rng, height: int, width: int) -> Canvas:
    """Rectangles from recursive splits of the frame, separated by thick lines."""
    canvas = _flat(rng, height, width)
    line = tuple(float(c) for c in colour(rng, value=(0.0, 0.4)))
    thickness = int(rng.integers(1, 6))
    boxes = [(0, 0, width, height)]
    for _ in range(int(rng.integers(4, 14))):
        x0, y0, x1, y1 = boxes.pop(int(rng.integers(len(boxes))))
        if x1 - x0 < 24 and y1 - y0 < 24:
            boxes.append((x0, y0, x1, y1))
            continue
        if (x1 - x0 >= y1 - y0) if rng.random() < 0.8 else rng.random() < 0.5:
            cut = int(rng.uniform(x0 + 0.25 * (x1 - x0), x0 + 0.75 * (x1 - x0)))
            boxes += [(x0, y0, cut, y1), (cut, y0, x1, y1)]
        else:
            cut = int(rng.uniform(y0 + 0.25 * (y1 - y0), y0 + 0.75 * (y1 - y0)))
            boxes += [(x0, y0, x1, cut), (x0, cut, x1, y1)]
    for x0, y0, x1, y1 in boxes:
        canvas[y0:y1, x0:x1] = colour(rng)
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), line, thickness)
    return canvas


# Wallpaper: one small motif repeated on a lattice teaches that a shape *repeated* is background,
# whatever the shape. Never a square: the held-out checker family (repeated squares) stays one
# the detector has not seen, so whether the rule carries over to it is measured, not trained.
_MOTIFS = ("circle", "triangle", "star", "cross", "arrow", "crescent")


def _motifs(rng: Rng, height: int, width: int) -> Canvas:
    from device_client.scenes.objects import shape_mask  # objects imports this module

    canvas = _flat(rng, height, width) if rng.random() < 0.5 else _gradient(rng, height, width)
    kind = _MOTIFS[int(rng.integers(len(_MOTIFS)))]
    spacing = rng.uniform(14, 48)
    size = max(6, int(spacing * rng.uniform(0.35, 0.8)))
    # a few turns of the motif, drawn once: all alike, or each motif one of them at random
    stamps = [shape_mask(kind, size, rng, True) for _ in range(1 if rng.random() < 0.5 else 6)]
    palette = [colour(rng) for _ in range(int(rng.integers(1, 4)))]
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    offset_rows = rng.random() < 0.5
    jitter = rng.uniform(0, 0.15) * spacing
    reach = int(np.hypot(height, width) / (2 * spacing)) + 2
    for row in range(-reach, reach + 1):
        for col in range(-reach, reach + 1):
            u = col + (0.5 if offset_rows and row % 2 else 0.0)
            x = int(width / 2 + (u * c - row * s) * spacing + rng.uniform(-jitter, jitter + 1e-6))
            y = int(height / 2 + (u * s + row * c) * spacing + rng.uniform(-jitter, jitter + 1e-6))
            x0, y0 = x - size // 2, y - size // 2
            cx0, cy0 = max(0, x0), max(0, y0)
            cx1, cy1 = min(width, x0 + size), min(height, y0 + size)
            if cx0 >= cx1 or cy0 >= cy1:
                continue
            stamp = stamps[int(rng.integers(len(stamps)))][cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
            ink = palette[(row + col) % len(palette)]
            patch = canvas[cy0:cy1, cx0:cx1]
            canvas[cy0:cy1, cx0:cx1] = patch + (ink - patch) * stamp[:, :, None]
    return canvas


_FAMILIES: dict[str, Callable[[Rng, int, int], Canvas]] = {
    "value_noise": _value_noise_bg, "gradient": _gradient, "sensor_noise": _sensor_noise,
    "clutter": _clutter, "flat": _flat, "stripes": _stripes, "plasma": _plasma,
    "checker": _checker, "cells": _cells, "blobs": _blobs, "bricks": _bricks,
    "hexagons": _hexagons, "mondrian": _mondrian, "motifs": _motifs,
}


def background(rng: Rng, family: str, height: int, width: int,
               photo_names: tuple[str, ...]) -> Canvas:
    if family == "photo":
        return photo(rng, height, width, photo_names)
    return np.ascontiguousarray(_FAMILIES[family](rng, height, width), dtype=np.float32)
