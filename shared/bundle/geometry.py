"""Where a frame's pixels go before the head: the size arithmetic of the manifest's resize rules.

Both sides need it and must agree to the pixel: the device resizes (device_client/preprocess.py,
with OpenCV), the edge maps boxes back and runs teachers on full frames (with torch). Only sizes
live here, no pixels, so it needs nothing but the standard library and numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shared.bundle.manifest import CenterCropResize, FixedResize, MinMaxSideResize, Preprocessing

Size = tuple[int, int]  # (height, width), as torchvision's image_sizes


@dataclass(frozen=True)
class FrameGeometry:
    """original (h, w) → resized (h, w) → crop box in the resized image → padded head input."""

    original: Size
    resized: Size
    crop: tuple[int, int, int, int]  # top, left, height, width inside the resized image
    padded: Size

    @property
    def input_size(self) -> Size:
        """The size the head saw before padding (torchvision's `image_sizes`)."""
        return (self.crop[2], self.crop[3])


def frame_geometry(original: Size, preprocessing: Preprocessing) -> FrameGeometry:
    height, width = original
    if height <= 0 or width <= 0:
        raise ValueError(f"empty frame {original}")
    rule = preprocessing.resize
    if isinstance(rule, MinMaxSideResize):
        resized = min_max_side_size(original, rule.min_size, rule.max_size)
        step = rule.size_divisible
        padded = (math.ceil(resized[0] / step) * step, math.ceil(resized[1] / step) * step)
        return FrameGeometry(original, resized, (0, 0, *resized), padded)
    if isinstance(rule, FixedResize):
        resized = (rule.height, rule.width)
        return FrameGeometry(original, resized, (0, 0, *resized), resized)
    assert isinstance(rule, CenterCropResize)
    resized = shorter_side_size(original, rule.resize)
    crop = min(rule.crop, *resized)
    top = round((resized[0] - crop) / 2.0)
    left = round((resized[1] - crop) / 2.0)
    return FrameGeometry(original, resized, (top, left, crop, crop), (crop, crop))


def min_max_side_size(original: Size, min_size: int, max_size: int) -> Size:
    """torchvision's GeneralizedRCNNTransform size, to the pixel: its scale is a float32
    division and interpolate floors `side * scale` in double precision."""
    short, long = np.float32(min(original)), np.float32(max(original))
    scale = float(min(np.float32(min_size) / short, np.float32(max_size) / long))
    return (math.floor(original[0] * scale), math.floor(original[1] * scale))


def shorter_side_size(original: Size, side: int) -> Size:
    """torchvision's `resize(img, side)`: the shorter side becomes `side`, the ratio is kept."""
    height, width = original
    if height <= width:
        return (side, int(side * width / height))
    return (int(side * height / width), side)
