"""Teachers by name, with clear errors; every registered teacher splits and runs its head."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from shared.errors import TeacherError  # noqa: E402
from split_models.split import SplitConfig, build_student, find_split  # noqa: E402
from split_models.teachers import TEACHERS, build_teacher, teacher_spec  # noqa: E402


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(TeacherError, match=r"known: .*resnet50.*tiny_fasterrcnn"):
        build_teacher("resnet51")


def test_unknown_weights_list_the_enum() -> None:
    with pytest.raises(TeacherError, match="IMAGENET1K_V2"):
        build_teacher("resnet50", weights="IMAGENET9K")
    with pytest.raises(TeacherError, match="no torchvision weights"):
        build_teacher("tiny_resnet", weights="DEFAULT")


def test_checkpoint_paths(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match="does not exist"):
        build_teacher("tiny_resnet", weights=tmp_path / "missing.pt")
    source = build_teacher("tiny_resnet")
    torch.save({"model": source.state_dict()}, tmp_path / "ok.pt")
    loaded = build_teacher("tiny_resnet", weights=str(tmp_path / "ok.pt"))
    assert torch.equal(loaded.fc.weight, source.fc.weight)
    torch.save(build_teacher("tiny_resnet", num_classes=3).state_dict(), tmp_path / "other.pt")
    with pytest.raises(TeacherError, match="does not fit"):
        build_teacher("tiny_resnet", weights=tmp_path / "other.pt")


def test_bad_split_layer_lists_the_children() -> None:
    with pytest.raises(TeacherError, match="layer1"):
        find_split("tiny_resnet", build_teacher("tiny_resnet"), "layer9")


@pytest.mark.slow
# largest_object is no network: it reads a detection tail (tests/split_models/test_largest_object)
@pytest.mark.parametrize("name", sorted(set(TEACHERS) - {"largest_object"}))
def test_every_teacher_splits_and_runs(name: str) -> None:
    """Construct (random init), split at the default layer, run head and tail at a small input."""
    torch.manual_seed(0)
    teacher = build_teacher(name)
    task = teacher_spec(name).task
    student = build_student({task: (name, teacher)}, SplitConfig(
        latent_channels=8, widths=(0.5, 1.0), inner_channels=16, prefilter_channels=8))
    image = torch.randint(0, 255, (1, 128, 160, 3), dtype=torch.uint8)
    head_params = sum(p.numel() for p in student.head.parameters())
    assert head_params < sum(p.numel() for p in teacher.parameters()) / 4
    for width, channels in ((0.5, 4), (1.0, 8)):
        student.set_width(width)
        with torch.no_grad():
            out = student(image, [(128, 150)], [(256, 300)])
        assert out["latent"].shape[:2] == (1, channels)
        if task == "detection":
            assert out["detection"][0]["boxes"].shape[1] == 4
        else:
            assert out["classification"].shape[0] == 1


def test_instance_batch_norm_drops_a_frames_own_contrast_from_half_the_channels() -> None:
    """IBN-a: the instance half answers the same to a frame at another contrast and brightness
    (per frame, per channel); the batch half, in eval mode, does not (its statistics are the
    training set's)."""
    from split_models.tiny import InstanceBatchNorm2d

    torch.manual_seed(0)
    norm = InstanceBatchNorm2d(8).eval()
    norm.batch.running_mean.uniform_(-1, 1)
    x = torch.randn(2, 8, 6, 7)
    shifted = 3.0 * x + 0.5  # another exposure of the same frames
    plain, other = norm(x), norm(shifted)
    assert torch.allclose(plain[:, :4], other[:, :4], atol=1e-4)
    assert not torch.allclose(plain[:, 4:], other[:, 4:], atol=1e-2)
    ibn = build_teacher("tiny_fasterrcnn_ibn")
    stages = [name for name, m in ibn.named_modules() if isinstance(m, InstanceBatchNorm2d)]
    assert stages == ["backbone.body.layer1.0.bn1", "backbone.body.layer2.0.bn1"]


def test_context_pool_adds_the_surround_of_each_box_clipped_to_the_frame() -> None:
    """ContextRoIPool: the first channels are the box's own RoI features, the rest those of the
    box grown about its centre (clipped to the frame); a feature change outside the box but
    inside its surround moves only the second half."""
    from torchvision.ops import MultiScaleRoIAlign

    from split_models.tiny import ContextRoIPool

    torch.manual_seed(0)
    pool, plain = ContextRoIPool(2.0), MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    shape = [(64, 96)]
    features = {str(i): torch.randn(1, 4, 64 >> (i + 2), 96 >> (i + 2)) for i in range(4)}
    boxes = [torch.tensor([[30.0, 20.0, 50.0, 40.0], [0.0, 0.0, 20.0, 10.0]])]
    assert pool.enlarge(boxes[0], shape[0]).tolist() == [[20.0, 10.0, 60.0, 50.0],
                                                         [0.0, 0.0, 30.0, 15.0]]
    out = pool(features, boxes, shape)
    assert out.shape == (2, 8, 7, 7)
    assert torch.equal(out[:, :4], plain(features, boxes, shape))
    grown = [pool.enlarge(boxes[0], shape[0])]
    assert torch.equal(out[:, 4:], plain(features, grown, shape))
    # both boxes are small: level "0" (stride 4), where the first box spans cells 7..12 x 5..10
    # and its surround 5..15 x 2..12; change a cell of the surround only
    changed = {k: v.clone() for k, v in features.items()}
    changed["0"][0, :, 3, 14] += 5.0
    again = pool(changed, boxes, shape)
    assert torch.equal(again[0, :4], out[0, :4])
    assert not torch.allclose(again[0, 4:], out[0, 4:])


def test_context_teacher_box_head_reads_both_regions() -> None:
    model = build_teacher("tiny_fasterrcnn_ctx")
    plain = build_teacher("tiny_fasterrcnn")
    assert model.roi_heads.box_head.fc6.in_features == 2 * plain.roi_heads.box_head.fc6.in_features
    model.train()
    target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([2])}
    losses = model([torch.rand(3, 120, 160)], [target])
    sum(losses.values()).backward()  # type: ignore[union-attr]
    assert model.roi_heads.box_head.fc6.weight.grad is not None


def test_repetition_features_tell_a_tiling_from_a_lone_shape() -> None:
    """RepetitionFeatures: where the feature recurs a lattice period away (a checkerboard of
    6-cell tiles), the cosine at offset 12 (a tile's own colour, two tiles along) is ~1 on
    every direction; at a lone patch on a flat field it is not. So the cue the pyramid gets
    depends on repetition, not on the shape repeated."""
    from split_models.tiny import RepetitionFeatures

    torch.manual_seed(0)
    block = RepetitionFeatures(4)
    nn = torch.nn
    block.project = nn.Identity()  # compare the features themselves
    a, b = torch.randn(4), torch.randn(4)
    yy, xx = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    parity = ((yy // 6 + xx // 6) % 2).float()
    checker = (a[:, None, None] * parity + b[:, None, None] * (1 - parity))[None]
    lone = b[:, None, None].expand(4, 48, 48).clone()[None]
    lone[:, :, 21:27, 21:27] = a[:, None, None]
    far = [i for i, (dy, dx) in enumerate(block.offsets) if (abs(dy), abs(dx)) in
           {(0, 12), (12, 0), (12, 12)}]
    centre = (slice(None), far, 24, 24)
    assert block.similarity(checker)[centre].min() > 0.99
    assert (block.similarity(lone)[centre] - a @ b / (a.norm() * b.norm())).abs().max() < 1e-4


def test_repetition_teacher_starts_as_the_plain_pyramid() -> None:
    """The cue enters through a zero-initialized 1x1 convolution (the FPN re-initializes every
    convolution it holds, so the zeros are set after it): training decides its weight."""
    model = build_teacher("tiny_fasterrcnn_rep").eval()
    mix = model.backbone.fpn.extra_blocks.mix
    assert mix.weight.abs().sum() == 0 and mix.bias.abs().sum() == 0
    x = torch.rand(1, 3, 64, 96)
    features = model.backbone(x)
    assert list(features) == ["0", "1", "2", "3", "pool"]
    with torch.no_grad():
        mix.weight.normal_()
    changed = model.backbone(x)
    assert not torch.allclose(features["0"], changed["0"])
