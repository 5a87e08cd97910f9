"""Split a teacher into a head (device) and tails (edge), with a learned bottleneck between.

    student = build_student({"detection": ("tiny_fasterrcnn", detector),
                             "classification": ("tiny_resnet", classifier)}, SplitConfig())

reads like torchvision's GeneralizedRCNN:

    head  = normalize → stem (the teacher's first layers) → encoder → latent   (+ prefilter score)
    wire  = prior: quantize around the medians, entropy code (shared/codecs on the device)
    tails = decoder (restores the teacher's tensor at the split point) → the rest of the teacher

"The rest of the teacher" is a copy of the teacher in which the stem children became Identity and
the split child became the decoder; its own forward does the rest, unchanged. The head comes from
the first teacher; every other task's tail decodes the same latent.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass
from torch import nn

from shared.errors import TeacherError
from split_models.bottleneck import Decoder, Encoder, LatentPrior
from split_models.regions import RegionHead
from split_models.slimmable import set_width_index
from split_models.tails import (
    ClassificationTail,
    DetectionTail,
    LargestObject,
    LargestObjectTail,
    run_tails,
)
from split_models.teachers import IMAGENET_MEAN, IMAGENET_STD, teacher_spec

_PROBE_SIZE = 128


# Validated like every config of splitedge (unknown keys refused); still a dataclass, so it
# round-trips through tail.pt as a plain dict and training configs embed it as it is.
@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class SplitConfig:
    """How to build the bottleneck. Plain values: it is saved in tail.pt to rebuild the tail."""

    latent_channels: int = 12
    widths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    encoder_stride: int = 2
    inner_channels: int = 64
    prefilter_channels: int = 16
    # regions of interest (split_models.regions): a head on the latent says which cells of
    # `roi_cell` × `roi_cell` latent positions hold objects; the device codes only those.
    # 0 channels: no such head, every position is coded (bundles before v6).
    region_channels: int = 0
    roi_cell: int = 4
    split_at: dict[str, str] = field(default_factory=dict)  # task -> child; default: the spec's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SplitConfig:
        return cls(**{**raw, "widths": tuple(raw["widths"])})


@dataclass(frozen=True)
class SplitPoint:
    """Where a teacher is cut, measured by running it once: the stem's output (channels, stride)
    and the tensor the decoder must restore (channels, stride)."""

    container: str
    child: str
    stem_channels: int
    stem_stride: int
    split_channels: int
    split_stride: int


class Prefilter(nn.Module):
    """P(frame holds an object of interest) from the stem output (hnd-ghnd's neural filter).

    A logit per location, then the maximum: "is there an object anywhere". A global average (as
    hnd-ghnd pools) lets one small object drown in a busy frame's mean."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.layers(features).flatten(1)
        return torch.sigmoid(logits.amax(dim=1))


class Head(nn.Module):
    """What the device runs: uint8 NHWC RGB image → (latent, prefilter score).

    Normalization is inside, so the ONNX graph takes the camera's bytes as they are.
    """

    mean: torch.Tensor  # buffers (registered in __init__)
    std: torch.Tensor

    def __init__(
        self,
        stem: nn.Module,
        encoder: Encoder,
        prefilter: Prefilter,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__()
        self.stem, self.encoder, self.prefilter = stem, encoder, prefilter
        self.regions: RegionHead | None = None  # set by build_student when configured
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.stem(self.normalize(image))
        return self.encoder(features), self.prefilter(features)

    def with_regions(
        self, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latent, prefilter score, P(object) per region cell): the device's head graph when the
        student has a region head."""
        if self.regions is None:
            raise ValueError("this head has no region head (split.region_channels: 0)")
        latent, score = self(image)
        return latent, score, torch.sigmoid(self.regions(latent))

    def gate(self, image: torch.Tensor) -> torch.Tensor:
        """Only the prefilter score: the device runs this first when it may skip the encoder."""
        score: torch.Tensor = self.prefilter(self.stem(self.normalize(image)))
        return score


class SplitModel(nn.Module):
    """The student: head → prior → tails. Eval mode = what device + edge compute together."""

    def __init__(
        self,
        head: Head,
        prior: LatentPrior,
        tails: dict[str, nn.Module],
        config: SplitConfig,
        latent_stride: int,
    ) -> None:
        super().__init__()
        self.head, self.prior, self.tails = head, prior, nn.ModuleDict(tails)
        self.config = config
        self.latent_stride = latent_stride  # input pixels per latent cell
        self.width_index = len(config.widths) - 1

    @property
    def width(self) -> float:
        return self.config.widths[self.width_index]

    def set_width(self, width: float) -> None:
        """Switch the encoder's width: an int per layer changes, no weights move."""
        widths = self.config.widths
        matches = [i for i, w in enumerate(widths) if abs(w - width) < 1e-9]
        if not matches:
            raise ValueError(f"width {width} not among {widths}")
        self.width_index = matches[0]
        set_width_index(self.head.encoder, self.width_index)

    def forward(
        self,
        images: torch.Tensor,
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
        tasks: tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """`images`: uint8 (B, H, W, 3), preprocessed and padded. Returns each task's output plus
        "latent", "latent_hat", "likelihoods" (training only) and "prefilter"."""
        latent, prefilter = self.head(images)
        out: dict[str, Any] = {"latent": latent, "prefilter": prefilter}
        if self.training:
            out["latent_hat"], out["likelihoods"] = self.prior(latent)
        else:
            out["latent_hat"] = self.prior.quantize(latent)
        out.update(run_tails(self.tails, out["latent_hat"], image_sizes, original_sizes,
                             tasks or tuple(self.tails)))
        return out


def build_student(teachers: dict[str, tuple[str, nn.Module]], config: SplitConfig) -> SplitModel:
    """A student from teachers {task: (registry name, model)}; the first one gives the head."""
    (first_task, (first_name, first_teacher)), *_ = teachers.items()
    if isinstance(first_teacher, LargestObject):
        raise TeacherError(f"{first_task}: largest_object reads the detection task's answer; "
                           "the first teacher gives the head and must be a network")
    point = find_split(first_name, first_teacher, config.split_at.get(first_task))
    stem = _stem(first_teacher, point)
    encoder = Encoder(
        point.stem_channels,
        config.latent_channels,
        config.widths,
        config.inner_channels,
        config.encoder_stride,
    )
    prefilter = Prefilter(point.stem_channels, config.prefilter_channels)
    mean, std = normalization(first_name, first_teacher)
    head = Head(stem, encoder, prefilter, mean, std)
    latent_stride = point.stem_stride * config.encoder_stride

    tails: dict[str, nn.Module] = {}
    derived: dict[str, LargestObject] = {}
    for task, (name, teacher) in teachers.items():
        if isinstance(teacher, LargestObject):  # answered from the detection tail, no decoder
            derived[task] = teacher
            continue
        task_point = find_split(name, teacher, config.split_at.get(task))
        upsample, remainder = divmod(latent_stride, task_point.split_stride)
        if remainder or upsample < 1:
            raise TeacherError(
                f"{name}'s split tensor is at stride {task_point.split_stride}, the latent at "
                f"{latent_stride}: the decoder can only upsample by a whole factor"
            )
        decoder = Decoder(
            encoder.latent_widths, task_point.split_channels, config.inner_channels, upsample
        )
        rest = _rest(teacher, task_point, decoder)
        tails[task] = (
            DetectionTail(rest, latent_stride) if task == "detection" else ClassificationTail(rest)
        )
    for task, rule in derived.items():
        detection = tails.get("detection")
        if not isinstance(detection, DetectionTail):
            raise TeacherError(f"{task}: largest_object reads the detection task's answer, "
                               "and this student has no detection teacher")
        tails[task] = LargestObjectTail(detection, rule)
    prior = LatentPrior(config.latent_channels)
    if config.region_channels:
        # built last, on a forked generator: every other module's init and the training's random
        # stream stay what they are without it (the recipe reproduces the same student)
        with torch.random.fork_rng(devices=[]):
            head.regions = RegionHead(config.latent_channels, config.region_channels,
                                      config.roi_cell)
    return SplitModel(head, prior, tails, config, latent_stride).eval()


def find_split(name: str, teacher: nn.Module, child: str | None = None) -> SplitPoint:
    """Locate `child` (default: the registry's) and measure channels and strides around it."""
    spec = teacher_spec(name)
    child = child or spec.split_at
    container = teacher.get_submodule(spec.container)
    names = [n for n, _ in container.named_children()]
    if child not in names:
        raise TeacherError(
            f"{name} cannot be split at {child!r}: {spec.container or 'the model'} has {names}"
        )
    seen: dict[str, torch.Tensor] = {}
    module = container.get_submodule(child)
    hooks = [
        module.register_forward_pre_hook(lambda _m, args: seen.setdefault("in", args[0])),
        module.register_forward_hook(lambda _m, _a, out: seen.setdefault("out", out)),
    ]
    probe = torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE)
    try:
        with torch.no_grad():
            runner: Any = teacher.backbone if spec.task == "detection" else teacher
            runner(probe)
    finally:
        for hook in hooks:
            hook.remove()
    stem_out, split_out = seen["in"], seen["out"]
    return SplitPoint(
        spec.container,
        child,
        stem_channels=stem_out.shape[1],
        stem_stride=_PROBE_SIZE // stem_out.shape[-1],
        split_channels=split_out.shape[1],
        split_stride=_PROBE_SIZE // split_out.shape[-1],
    )


def normalization(name: str, teacher: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The teacher's mean/std (detectors: their transform's; classifiers: ImageNet's)."""
    transform = getattr(teacher, "transform", None)
    if teacher_spec(name).task == "detection" and transform is not None:
        return tuple(transform.image_mean), tuple(transform.image_std)
    return IMAGENET_MEAN, IMAGENET_STD


def _children_before(container: nn.Module, child: str) -> list[str]:
    names = [n for n, _ in container.named_children()]
    return names[: names.index(child)]


def _stem(teacher: nn.Module, point: SplitPoint) -> nn.Sequential:
    container = teacher.get_submodule(point.container)
    stem = OrderedDict(
        (n, copy.deepcopy(container.get_submodule(n)))
        for n in _children_before(container, point.child)
    )
    return nn.Sequential(stem)


def _rest(teacher: nn.Module, point: SplitPoint, decoder: Decoder) -> nn.Module:
    rest = copy.deepcopy(teacher)
    container = rest.get_submodule(point.container)
    for name in _children_before(container, point.child):
        setattr(container, name, nn.Identity())
    setattr(container, point.child, decoder)
    return rest

