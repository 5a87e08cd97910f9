"""The teachers: torchvision detectors and classifiers by name, with their weights.

    teacher = build_teacher("fasterrcnn_resnet50_fpn_v2", weights="DEFAULT")   # user's machine
    teacher = build_teacher("tiny_fasterrcnn", weights=None)                   # tests, demo

`weights` is None (random init), a torchvision weights enum name ("DEFAULT",
"COCO_V1", or "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1"; downloaded by torchvision), or the
path of a local checkpoint (a state dict, or {"model": state dict} as torchvision's references
save them). Each entry also says where its backbone can be split and how frames are preprocessed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torchvision import models
from torchvision.models import WeightsEnum
from torchvision.models import detection as tvd

from shared.errors import TeacherError
from split_models.tails import LargestObject
from split_models.tiny import TinyResNet, frame_classifier, small_fasterrcnn, tiny_fasterrcnn

Task = Literal["detection", "classification"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher the factory knows. `container` is the dotted path of the module whose children
    run first, in order, on the normalized image; `split_at` names the child the bottleneck
    replaces by default (HND: ResNet's `layer1`, right after the stem)."""

    name: str
    task: Task
    build: Callable[..., nn.Module]  # (weights=, num_classes=) -> model
    weights_enum: type[WeightsEnum] | None
    container: str
    split_at: str
    # classification only: the ImageNet-style resize/crop (detectors carry their own transform)
    resize: int = 256
    crop: int = 224


def _torchvision(builder: Callable[..., nn.Module], detector: bool) -> Callable[..., nn.Module]:
    def build(weights: WeightsEnum | None, num_classes: int | None) -> nn.Module:
        kwargs: dict[str, Any] = {"weights": weights}
        if detector:
            kwargs["weights_backbone"] = None  # never fetch a second file behind the user's back
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        return builder(**kwargs)

    return build


def _tiny(builder: Callable[..., nn.Module], default_classes: int) -> Callable[..., nn.Module]:
    def build(weights: WeightsEnum | None, num_classes: int | None) -> nn.Module:
        del weights  # no torchvision weights exist for these; checkpoints load afterwards
        return builder(num_classes=num_classes or default_classes)

    return build


TEACHERS: dict[str, TeacherSpec] = {
    spec.name: spec
    for spec in (
        TeacherSpec(
            "fasterrcnn_resnet50_fpn_v2", "detection",
            _torchvision(tvd.fasterrcnn_resnet50_fpn_v2, detector=True),
            tvd.FasterRCNN_ResNet50_FPN_V2_Weights, "backbone.body", "layer1",
        ),
        TeacherSpec(
            "fasterrcnn_mobilenet_v3_large_fpn", "detection",
            _torchvision(tvd.fasterrcnn_mobilenet_v3_large_fpn, detector=True),
            tvd.FasterRCNN_MobileNet_V3_Large_FPN_Weights, "backbone.body", "2",
        ),
        TeacherSpec(
            "retinanet_resnet50_fpn_v2", "detection",
            _torchvision(tvd.retinanet_resnet50_fpn_v2, detector=True),
            tvd.RetinaNet_ResNet50_FPN_V2_Weights, "backbone.body", "layer1",
        ),
        TeacherSpec(
            "ssdlite320_mobilenet_v3_large", "detection",
            _torchvision(tvd.ssdlite320_mobilenet_v3_large, detector=True),
            tvd.SSDLite320_MobileNet_V3_Large_Weights, "backbone.features.0", "2",
        ),
        TeacherSpec(
            "resnet50", "classification", _torchvision(models.resnet50, detector=False),
            models.ResNet50_Weights, "", "layer1",
        ),
        TeacherSpec(
            "mobilenet_v3_large", "classification",
            _torchvision(models.mobilenet_v3_large, detector=False),
            models.MobileNet_V3_Large_Weights, "features", "2",
        ),
        TeacherSpec(
            "tiny_fasterrcnn", "detection", _tiny(tiny_fasterrcnn, 4), None,
            "backbone.body", "layer1",
        ),
        # the same with IBN-a in its first two stages (appearance normalized per frame)
        TeacherSpec(
            "tiny_fasterrcnn_ibn", "detection", _tiny(partial(tiny_fasterrcnn, ibn=2), 4), None,
            "backbone.body", "layer1",
        ),
        # the same whose box head also sees each box's surround, twice its size
        TeacherSpec(
            "tiny_fasterrcnn_ctx", "detection", _tiny(partial(tiny_fasterrcnn, context=2.0), 4),
            None, "backbone.body", "layer1",
        ),
        # the same whose pyramid also carries each position's self-similarity
        TeacherSpec(
            "tiny_fasterrcnn_rep", "detection",
            _tiny(partial(tiny_fasterrcnn, repetition=True), 4), None, "backbone.body", "layer1",
        ),
        TeacherSpec(
            "small_fasterrcnn", "detection", _tiny(small_fasterrcnn, 4), None,
            "backbone.body", "layer1",
        ),
        TeacherSpec(
            "tiny_resnet", "classification", _tiny(TinyResNet, 10), None, "", "layer1",
            resize=72, crop=64,
        ),
        TeacherSpec(
            "frame_classifier", "classification", _tiny(frame_classifier, 6), None, "",
            "layer1", resize=72, crop=64,
        ),
        # no network: the frame label read off the detection task's answer (split_models/tails)
        TeacherSpec(
            "largest_object", "classification", _tiny(LargestObject, 6), None, "", "",
        ),
    )
}


def teacher_spec(name: str) -> TeacherSpec:
    try:
        return TEACHERS[name]
    except KeyError:
        raise TeacherError(f"unknown teacher {name!r}; known: {', '.join(TEACHERS)}") from None


def build_teacher(
    name: str, weights: str | Path | None = None, num_classes: int | None = None
) -> nn.Module:
    """The teacher `name` in eval mode, with `weights` (see the module docstring)."""
    spec = teacher_spec(name)
    checkpoint = _checkpoint_path(weights)
    enum = None if checkpoint or weights is None else _weights_enum(spec, str(weights))
    model = spec.build(enum, None if enum is not None else num_classes)
    if checkpoint is not None:
        _load_checkpoint(model, checkpoint, name)
    return model.eval()


def categories(name: str, num_classes: int) -> tuple[str, ...]:
    """Class names: torchvision's list when the class count is the enum's, else class0, class1…"""
    spec = teacher_spec(name)
    if spec.weights_enum is not None:
        known = spec.weights_enum.DEFAULT.meta.get("categories")  # metadata, no download
        if known is not None and len(known) == num_classes:
            return tuple(known)
    return tuple(f"class{i}" for i in range(num_classes))


def _checkpoint_path(weights: str | Path | None) -> Path | None:
    if weights is None:
        return None
    path = Path(weights)
    looks_like_path = isinstance(weights, Path) or path.suffix in {".pt", ".pth"} or "/" in str(
        weights
    )
    if path.is_file():
        return path
    if looks_like_path:
        raise TeacherError(f"checkpoint {path} does not exist (cwd {Path.cwd()})")
    return None


def _weights_enum(spec: TeacherSpec, weights: str) -> WeightsEnum:
    if spec.weights_enum is None:
        raise TeacherError(
            f"teacher {spec.name} has no torchvision weights; pass None or a checkpoint path"
        )
    short = weights.split(".")[-1]
    if short == "DEFAULT":
        return spec.weights_enum.DEFAULT
    try:
        return spec.weights_enum[short]
    except KeyError:
        known = ", ".join(["DEFAULT", *(str(w) for w in spec.weights_enum)])
        raise TeacherError(
            f"unknown weights {weights!r} for {spec.name}; known: {known}; or a checkpoint path"
        ) from None


def _load_checkpoint(model: nn.Module, path: Path, name: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        raise TeacherError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise TeacherError(
            f"{path} does not fit teacher {name} (wrong architecture or class count?): {exc}"
        ) from exc
