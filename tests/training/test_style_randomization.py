"""Style randomization: looks change, boxes and sizes never do, the step's seed fixes the bytes,
and with both probabilities at 0 a batch is exactly what the recipe drew before. MixStyle mixes
feature statistics only while training, deterministically per step, and leaves the model's
weights and its eval-mode answers alone."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from split_models.data.coco import Frame  # noqa: E402
from split_models.training.config import Data  # noqa: E402
from split_models.training.style_randomization import (  # noqa: E402
    MixStyle,
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


def _mixstyle_model() -> torch.nn.Module:
    from split_models.tiny import TinyResNet

    torch.manual_seed(0)
    return TinyResNet(num_classes=3)


def _layer1_output(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    found: list[torch.Tensor] = []
    handle = model.layer2.register_forward_pre_hook(lambda _m, inputs: found.append(inputs[0]))
    model(images)
    handle.remove()
    return found[0]


def test_mixstyle_mixes_styles_in_training_only_and_the_same_way_per_step() -> None:
    images = torch.rand(4, 3, 32, 32) * torch.tensor([0.2, 0.6, 1.0, 1.4]).view(4, 1, 1, 1)
    model = _mixstyle_model()
    keys = set(model.state_dict())
    with torch.no_grad():
        model.train()
        plain = _layer1_output(model, images)
        model.eval()
        plain_eval = model(images)
        mix = MixStyle(model, p=1.0, layers=("layer1",))
        assert set(model.state_dict()) == keys  # nothing of it is saved or exported
        assert torch.equal(model(images), plain_eval)  # eval mode: untouched
        model.train()
        mix.reseed(0, 5)
        mixed = _layer1_output(model, images)
        mix.reseed(0, 5)
        again = _layer1_output(model, images)
        mix.reseed(0, 6)
        other_step = _layer1_output(model, images)
    assert torch.equal(mixed, again) and not torch.equal(mixed, other_step)
    assert not torch.allclose(mixed, plain, atol=1e-3)
    # each sample's channel means become a mix of two samples' means: within the batch's range
    means, plain_means = mixed.mean(dim=(2, 3)), plain.mean(dim=(2, 3))
    assert (means >= plain_means.min(dim=0).values - 1e-4).all()
    assert (means <= plain_means.max(dim=0).values + 1e-4).all()
    mix.remove()
    with torch.no_grad():
        assert torch.equal(_layer1_output(model, images), plain)


def test_mixstyle_off_and_misnamed_layers() -> None:
    images = torch.rand(2, 3, 32, 32)
    model = _mixstyle_model().train()
    with torch.no_grad():
        plain = _layer1_output(model, images)
        MixStyle(model, p=0.0)
        assert torch.equal(_layer1_output(model, images), plain)
    with pytest.raises(ValueError, match="no child named"):
        MixStyle(model, p=0.5, layers=("stage9",))
    with pytest.raises(ValueError, match="probability"):
        MixStyle(model, p=1.5)
