"""Style randomization: looks change, boxes and sizes never do, the step's seed fixes the bytes,
and with both probabilities at 0 a batch is exactly what the recipe drew before."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from split_models.data.coco import Frame  # noqa: E402
from split_models.training.config import Data  # noqa: E402
from split_models.training.style_randomization import (  # noqa: E402
    amplitude_mix,
    random_convolution,
)
from split_models.training.teacher import augment, augment_batch  # noqa: E402


def _frame(seed: int) -> Frame:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 120, (48, 64, 3), dtype=np.uint8)
    image[10:30, 20:40] = (230, 40, 40)  # an object: structure the styles must keep
    boxes = np.array([[20, 10, 40, 30]], dtype=np.float32)
    return Frame(image, boxes, np.array([1]), image_id=seed, labelled=True)


def test_random_convolution_restyles_deterministically_and_keeps_structure() -> None:
    image = _frame(0).image
    first = [random_convolution(image, torch.Generator().manual_seed(s)) for s in range(6)]
    again = random_convolution(image, torch.Generator().manual_seed(0))
    assert all(out.dtype == np.uint8 and out.shape == image.shape for out in first)
    assert np.array_equal(first[0], again)
    assert any(not np.array_equal(out, image) for out in first)
    # the object's edge survives: inside and outside the square still differ
    for out in first:
        inside = out[14:26, 24:36].astype(float).mean(axis=(0, 1))
        outside = out[36:46, 4:16].astype(float).mean(axis=(0, 1))
        assert np.abs(inside - outside).max() > 5


def test_amplitude_mix_keeps_this_frames_phase() -> None:
    image, other = _frame(0).image, _frame(1).image
    generator = torch.Generator().manual_seed(3)
    # the amplitude of the frame itself: nothing to mix in, the frame comes back (to rounding)
    same = amplitude_mix(image, image, generator).astype(int)
    assert np.abs(same - image.astype(int)).max() <= 1
    mixed = amplitude_mix(image, np.flipud(other).copy(), torch.Generator().manual_seed(5))
    assert mixed.dtype == np.uint8 and mixed.shape == image.shape
    assert not np.array_equal(mixed, image)
    with pytest.raises(ValueError, match="one size"):
        amplitude_mix(image, other[:40], generator)


def test_augment_batch_without_styles_is_the_recipe_as_before() -> None:
    frames = [_frame(s) for s in range(4)]
    data = Data(train="-", colour_ops=2)
    batch = augment_batch(frames, torch.Generator().manual_seed(9), data)
    generator = torch.Generator().manual_seed(9)
    before = [augment(f, generator, True, True, 2) for f in frames]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(batch, before, strict=True))


def test_augment_batch_with_styles_changes_looks_not_boxes() -> None:
    frames = [_frame(s) for s in range(4)]
    plain = Data(train="-", flip=False, photometric=False)
    styled = Data(train="-", flip=False, photometric=False, random_convolution=1.0,
                  amplitude_mix=1.0)
    out = augment_batch(frames, torch.Generator().manual_seed(2), styled)
    again = augment_batch(frames, torch.Generator().manual_seed(2), styled)
    untouched = augment_batch(frames, torch.Generator().manual_seed(2), plain)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(out, again, strict=True))
    assert all(not np.array_equal(a.image, f.image) for a, f in zip(out, frames, strict=True))
    assert all(np.array_equal(a.image, f.image) for a, f in zip(untouched, frames, strict=True))
    assert all(np.array_equal(a.boxes, f.boxes) and a.image.shape == f.image.shape
               for a, f in zip(out, frames, strict=True))


@pytest.mark.parametrize("key", ["random_convolution", "amplitude_mix"])
def test_style_probabilities_are_probabilities(key: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=key):
        Data(train="-", **{key: 1.5})
