"""Training augmentation: deterministic by step seed, every colour operation keeps a uint8 frame
of the same size, and boxes never move under colour changes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from split_models.data.coco import Frame  # noqa: E402
from split_models.training.teacher import COLOUR_OPS, augment, colour_op  # noqa: E402


def _frame() -> Frame:
    rng = np.random.default_rng(0)
    image = rng.integers(60, 180, (60, 80, 3), dtype=np.uint8)  # low contrast: room to move
    boxes = np.array([[10, 12, 30, 40]], dtype=np.float32)
    return Frame(image, boxes, np.array([2]), image_id=1, labelled=True)


@pytest.mark.parametrize("name", COLOUR_OPS)
def test_every_colour_op_keeps_a_uint8_frame(name: str) -> None:
    image = torch.from_numpy(_frame().image).permute(2, 0, 1)
    changed = False
    for magnitude in (0.0, 0.5, 0.99):
        out = colour_op(name, image, magnitude)
        assert out.dtype == torch.uint8 and out.shape == image.shape
        changed |= not torch.equal(out, image)
    assert changed


def test_augment_is_deterministic_by_seed_and_keeps_boxes() -> None:
    frame = _frame()

    def run(seed: int) -> list[Frame]:
        generator = torch.Generator().manual_seed(seed)
        return [augment(frame, generator, False, True, ops=2) for _ in range(8)]

    first, again, other = run(1), run(1), run(2)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again, strict=True))
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))
    assert all(np.array_equal(f.boxes, frame.boxes) for f in first)
