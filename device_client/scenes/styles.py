"""The style families a scene draws from, and the assets they use.

Two disjoint sets, by construction:

- backgrounds. train: photo (13 of scikit-image's photos), value noise, gradient, sensor
  noise, clutter (lines, arcs, text), flat, stripes, and three tilings: running-bond bricks,
  hexagons, recursive rectangles (Mondrian). shifted: photo (the 6 other photos), plasma,
  checker tiles, Voronoi cells, soft blobs.
- object fills. train: flat, two-colour gradient, shaded (a lit sphere), outline only, noise
  texture, hatch, translucent, and camouflage (a procedural training background as the fill).
  shifted: checker, polka dots, double outline, photo texture, glow (soft edges).
- faces. train: LFW subset identities 0–74, grey, skin or colour tint, surgical masks.
  shifted: identities 75–99, false colour, posterized, inverted, sunglasses.

Opt-in (`EXTRA_BACKGROUNDS`, drawn by neither set unless a training set asks): motifs, one small
shape repeated on a lattice (never a square, so the checker family stays held out).

Shared by both (they are the camera and the geometry, not a look): object classes and shapes,
scale (14–150 px), rotation, anti-aliased or hard edges, dark rims, drop shadows, occluders,
distractor shapes, and every camera effect.

Photos and faces come from scikit-image's bundled data when it is installed (the `train` extra);
without it (a device) the photo family and the face class are left out and said so.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from functools import cache
from typing import Literal

import numpy as np
import numpy.typing as npt

Styles = Literal["train", "shifted"]
Image = npt.NDArray[np.uint8]

TRAIN_PHOTOS = ("astronaut", "camera", "chelsea", "coins", "hubble_deep_field",
                "immunohistochemistry", "moon", "page", "text", "cat", "brick", "grass",
                "colorwheel")
SHIFTED_PHOTOS = ("coffee", "rocket", "gravel", "clock", "retina", "cell")
FACE_SPLIT = 75  # LFW subset faces [0, 75) draw train faces, [75, 100) shifted ones


@dataclass(frozen=True)
class Families:
    backgrounds: tuple[str, ...]
    fills: tuple[str, ...]
    face_looks: tuple[str, ...]
    face_extras: tuple[str, ...]
    photos: tuple[str, ...]
    faces: slice


TRAIN = Families(
    backgrounds=("photo", "value_noise", "gradient", "sensor_noise", "clutter", "flat",
                 "stripes", "bricks", "hexagons", "mondrian"),
    fills=("flat", "gradient", "shaded", "outline", "noise", "hatch", "translucent", "texture"),
    face_looks=("grey", "skin", "tint"),
    face_extras=("none", "none", "mask"),
    photos=TRAIN_PHOTOS,
    faces=slice(0, FACE_SPLIT),
)
SHIFTED = Families(
    backgrounds=("photo", "plasma", "checker", "cells", "blobs"),
    fills=("checker", "dots", "double_outline", "photo_texture", "glow"),
    face_looks=("false_colour", "posterized", "inverted"),
    face_extras=("none", "none", "sunglasses"),
    photos=SHIFTED_PHOTOS,
    faces=slice(FACE_SPLIT, 100),
)


# Background families a training set may add (`splitedge dataset generate --extra-backgrounds`):
# drawn by neither style set unless asked. motifs: one small shape (never a square) repeated on
# a lattice, wallpaper-like (style_shift.md, "Tried: wallpaper backgrounds").
EXTRA_BACKGROUNDS = ("motifs",)


def with_backgrounds(fam: Families, extra: Collection[str]) -> Families:
    """`fam` drawing `extra` background families as well, after its own (a frame's draw is the
    same as a style set listing them last)."""
    unknown = set(extra) - set(EXTRA_BACKGROUNDS)
    if unknown:
        raise ValueError(f"unknown extra backgrounds {sorted(unknown)}; known: {EXTRA_BACKGROUNDS}")
    return replace(fam, backgrounds=fam.backgrounds + tuple(b for b in extra
                                                              if b not in fam.backgrounds))


def families(styles: Styles) -> Families:
    if styles == "train":
        return TRAIN
    if styles == "shifted":
        return SHIFTED
    raise ValueError(f"styles must be 'train' or 'shifted', got {styles!r}")


SHIFTABLE = ("backgrounds", "fills", "faces")


def mixed(shifted: Collection[str]) -> Families:
    """The training families with the parts named in `shifted` (of SHIFTABLE) taken from the
    shifted set: a diagnostic, to measure what each held-out part costs a model."""
    unknown = set(shifted) - set(SHIFTABLE)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; known: {SHIFTABLE}")
    fam = TRAIN
    if "backgrounds" in shifted:
        fam = replace(fam, backgrounds=SHIFTED.backgrounds, photos=SHIFTED.photos)
    if "fills" in shifted:
        fam = replace(fam, fills=SHIFTED.fills)
    if "faces" in shifted:
        fam = replace(fam, face_looks=SHIFTED.face_looks, face_extras=SHIFTED.face_extras,
                      faces=SHIFTED.faces)
    return fam


def have_assets() -> bool:
    """True when scikit-image's photos and faces can be drawn (the train extra)."""
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        return False
    return bool(photos(TRAIN_PHOTOS))


@cache
def photos(names: tuple[str, ...]) -> tuple[Image, ...]:
    """The named scikit-image photos as RGB uint8 (those that load offline; none without it)."""
    try:
        import skimage.data
    except ImportError:
        return ()
    loaded = []
    for name in names:
        try:
            photo = np.asarray(getattr(skimage.data, name)())
        except Exception:  # a photo that needs a download: skip it, the others suffice
            continue
        if photo.dtype == bool:
            photo = photo.astype(np.uint8) * 255
        if photo.ndim == 2:
            photo = np.repeat(photo[:, :, None], 3, axis=2)
        loaded.append(np.ascontiguousarray(photo[:, :, :3].astype(np.uint8)))
    return tuple(loaded)


@cache
def faces() -> npt.NDArray[np.float32]:
    """LFW subset faces, 25×25 grey in [0, 1] (empty without scikit-image)."""
    try:
        import skimage.data
    except ImportError:
        return np.zeros((0, 25, 25), np.float32)
    # lfw_subset(): 100 faces then 100 non-faces
    subset = skimage.data.lfw_subset()  # type: ignore[no-untyped-call]
    return np.asarray(subset[:100], dtype=np.float32)
