"""Tails: the edge's half of a split model. Each takes the dequantized latent batch, the sizes the
head saw and the original frame sizes, and returns what its teacher would.

A tail wraps "the rest of the teacher": a copy whose stem is Identity and whose split child is the
decoder. Classifiers need nothing more (their forward starts at the stem). Detectors normally take
images through `transform` (normalize, resize, pad); here that already happened on the device, so
the tail replays the teacher's eval forward from the backbone on, then torchvision's own
`transform.postprocess` maps boxes to original pixels.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD

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
