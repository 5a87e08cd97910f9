"""Tails: the edge's half of a split model. Each takes the dequantized latent batch, the sizes the
head saw and the original frame sizes, and returns what its teacher would.

A tail wraps "the rest of the teacher": a copy whose stem is Identity and whose split child is the
decoder. Classifiers need nothing more (their forward starts at the stem). Detectors normally take
images through `transform` (normalize, resize, pad); here that already happened on the device, so
the tail replays the teacher's eval forward from the backbone on, then torchvision's own
`transform.postprocess` maps boxes to original pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD

from shared.results import largest_object_log_probabilities

Detections = list[dict[str, torch.Tensor]]


class ClassificationTail(nn.Module):
    """latent → logits (B, classes). Works at any latent size (the teacher pools adaptively)."""

    def __init__(self, rest: nn.Module) -> None:
        super().__init__()
        self.rest = rest

    def forward(
        self,
        latent: torch.Tensor,
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
    ) -> torch.Tensor:
        del image_sizes, original_sizes  # a label does not depend on where pixels went
        out: torch.Tensor = self.rest(latent)
        return out


class DetectionTail(nn.Module):
    """latent → detections in original-image pixels, for torchvision's detector families."""

    def __init__(self, rest: nn.Module, latent_stride: int) -> None:
        super().__init__()
        if not isinstance(rest, GeneralizedRCNN | RetinaNet | FCOS | SSD):
            raise TypeError(f"no detection tail for {type(rest).__name__}")
        self.rest = rest
        self.latent_stride = latent_stride

    def forward(
        self,
        latent: torch.Tensor,
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
    ) -> Detections:
        model = self.rest
        batch, _, height, width = latent.shape
        # Anchor generators only read the padded image's shape: an empty tensor carries it.
        stride = self.latent_stride
        padded = latent.new_empty((batch, 0, height * stride, width * stride))
        images = ImageList(padded, [tuple(s) for s in image_sizes])
        features = model.backbone(latent)
        if isinstance(features, torch.Tensor):
            features = {"0": features}
        if isinstance(model, GeneralizedRCNN):
            proposals, _ = model.rpn(images, features)
            detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        else:
            detections = _dense_detections(model, images, list(features.values()))
        done: Detections = model.transform.postprocess(
            detections, images.image_sizes, original_sizes
        )
        return done


# A detection a user would act on (the evaluation's false-detection score too).
LARGEST_OBJECT_SCORE = 0.5


class LargestObject(nn.Module):
    """The frame label read off a detector's answer: the class of the largest detection scoring
    at least `min_score`, "none" (index 0) when there is none. No weights: where a frame's label
    is defined by its objects (the demo's "largest object's class, or none"), the detection tail
    answers it better than a classifier learnt beside it (top-1 0.61 against 0.33 at width 1.0 on
    the demo's test split, bundles v5 and v4).

    Its input is a batch of torchvision detections (labels 1..K, the classes' indices here), its
    output log-probabilities (B, num_classes): the chosen class gets the detection's score,
    "none" the rest."""

    def __init__(self, num_classes: int = 6, min_score: float = LARGEST_OBJECT_SCORE) -> None:
        super().__init__()
        self.num_classes, self.min_score = num_classes, min_score

    def forward(self, detections: Detections) -> torch.Tensor:
        rows = [
            torch.from_numpy(largest_object_log_probabilities(
                found["boxes"].detach().cpu().numpy(), found["scores"].detach().cpu().numpy(),
                found["labels"].detach().cpu().numpy(), self.num_classes, self.min_score,
            )).float()
            for found in detections
        ]
        return torch.stack(rows) if rows else torch.zeros((0, self.num_classes))


class LargestObjectTail(nn.Module):
    """A task answered by `LargestObject` on the detection tail's output: the same latent, no
    weights of its own (the detection tail is not a submodule, so its weights are saved once,
    under the detection task)."""

    detection: DetectionTail
    rule: LargestObject

    def __init__(self, detection: DetectionTail, rule: LargestObject) -> None:
        super().__init__()
        object.__setattr__(self, "detection", detection)
        self.rule = rule

    def forward(
        self,
        latent: torch.Tensor,
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
    ) -> torch.Tensor:
        out: torch.Tensor = self.rule(self.detection(latent, image_sizes, original_sizes))
        return out


def run_tails(
    tails: nn.ModuleDict | Mapping[str, nn.Module],
    latent: torch.Tensor,
    image_sizes: Sequence[tuple[int, ...]],
    original_sizes: Sequence[tuple[int, ...]],
    tasks: Sequence[str],
) -> dict[str, Any]:
    """Each task's tail on one latent batch. A `LargestObjectTail` reads the detection task's
    answer when that task runs too, rather than running the detection tail a second time."""
    outputs: dict[str, Any] = {}
    # (nn.ModuleDict has no .get)
    detection = tails["detection"] if "detection" in tails else None  # noqa: SIM401
    derived_last = sorted(tasks, key=lambda t: isinstance(tails[t], LargestObjectTail))
    for task in derived_last:
        tail = tails[task]
        if isinstance(tail, LargestObjectTail) and tail.detection is detection and (
            "detection" in outputs
        ):
            outputs[task] = tail.rule(outputs["detection"])
        else:
            outputs[task] = tail(latent, list(image_sizes), list(original_sizes))
    return outputs


def _dense_detections(
    model: RetinaNet | FCOS | SSD, images: ImageList, features: list[torch.Tensor]
) -> Detections:
    """The eval half of RetinaNet / FCOS / SSD forward, as torchvision writes it."""
    head_outputs = model.head(features)
    anchors = model.anchor_generator(images, features)
    if isinstance(model, SSD):
        ssd: Detections = model.postprocess_detections(head_outputs, anchors, images.image_sizes)
        return ssd
    per_level = [x.size(2) * x.size(3) for x in features]
    anchors_per_cell = head_outputs["cls_logits"].size(1) // sum(per_level)
    per_level = [n * anchors_per_cell for n in per_level]
    split_outputs = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
    split_anchors = [list(a.split(per_level)) for a in anchors]
    dense: Detections = model.postprocess_detections(
        split_outputs, split_anchors, images.image_sizes
    )
    return dense
