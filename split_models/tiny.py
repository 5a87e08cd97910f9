"""Small teachers that train and run on a CPU in seconds: the demo bundle and the tests use them.

They are torchvision models with fewer channels, not new architectures: `TinyResNet` is a
torchvision `ResNet` (same attribute names, same forward) with widths 16..128, and the tiny
detector is torchvision's `FasterRCNN` on it with a narrow FPN and box head. So the split code
treats them exactly like the big teachers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

TINY_WIDTHS = (16, 32, 64, 128)
SMALL_WIDTHS = (8, 16, 32, 64)


def frame_classifier(num_classes: int = 6) -> TinyResNet:
    """A TinyResNet that max-pools: the frame-label classifier the demo trains on the latent."""
    return TinyResNet(num_classes, pool="max")


def small_fasterrcnn(num_classes: int = 4, min_size: int = 180, max_size: int = 240) -> FasterRCNN:
    """The device's own detector: half the tiny teacher's channels at 3/4 of its input side,
    about 1/5 of its multiply-adds (benchmarks/heads.py measures both)."""
    return tiny_fasterrcnn(num_classes, min_size, max_size, SMALL_WIDTHS, 16, 64)


class InstanceBatchNorm2d(nn.Module):
    """IBN-a (Pan et al., ECCV 2018): instance norm on the first `share` of the channels, batch
    norm on the rest. Instance norm removes each frame's own contrast and colour cast from the
    shallow features, where appearance lives; batch norm keeps what tells classes apart."""

    def __init__(self, channels: int, share: float = 0.5) -> None:
        super().__init__()
        self.split = int(channels * share)
        self.instance = nn.InstanceNorm2d(self.split, affine=True)
        self.batch = nn.BatchNorm2d(channels - self.split)

    def forward(self, x: Tensor) -> Tensor:
        a, b = torch.split(x, [self.split, x.shape[1] - self.split], dim=1)
        return torch.cat([self.instance(a.contiguous()), self.batch(b.contiguous())], dim=1)


class TinyResNet(ResNet):  # type: ignore[misc]  # torchvision ships no types
    """A ResNet-10 with `widths` channels per stage; torchvision's forward and attribute names.
    `ibn`: the first that many stages normalize their blocks' first convolution IBN-a style."""

    def __init__(
        self,
        num_classes: int = 10,
        widths: tuple[int, int, int, int] = TINY_WIDTHS,
        pool: str = "avg",
        ibn: int = 0,
    ):
        nn.Module.__init__(self)  # ResNet.__init__ hard-codes 64..512 channels
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = widths[0], 1, 1, 64
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(BasicBlock, widths[0], 1)
        self.layer2 = self._make_layer(BasicBlock, widths[1], 1, stride=2)
        self.layer3 = self._make_layer(BasicBlock, widths[2], 1, stride=2)
        self.layer4 = self._make_layer(BasicBlock, widths[3], 1, stride=2)
        # "max": the strongest response anywhere, for labels one object decides (a frame's
        # largest object), which a mean over a mostly empty frame dilutes
        self.avgpool = nn.AdaptiveMaxPool2d((1, 1)) if pool == "max" else nn.AdaptiveAvgPool2d(
            (1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4)[:ibn]:
            for block in stage:
                block.bn1 = InstanceBatchNorm2d(block.bn1.num_features)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


class ContextRoIPool(MultiScaleRoIAlign):  # type: ignore[misc]  # FasterRCNN checks the type
    """RoI features of each box beside those of the box enlarged `scale` times about its centre
    (clipped to the frame), concatenated by channel. A box head that sees only the inside of a
    box cannot tell a square object from one tile of a checkerboard; with the surround it can
    learn that a shape repeated around it is background (multi-region features, Gidaris and
    Komodakis, ICCV 2015)."""

    def __init__(self, scale: float) -> None:
        super().__init__(["0", "1", "2", "3"], 7, 2)  # FasterRCNN's own default pool
        self.scale = scale

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor],
                image_shapes: list[tuple[int, int]]) -> Tensor:
        inner = super().forward(features, proposals, image_shapes)
        outer = super().forward(features, [self.enlarge(b, shape) for b, shape
                                     in zip(proposals, image_shapes, strict=True)], image_shapes)
        return torch.cat([inner, outer], dim=1)

    def enlarge(self, boxes: Tensor, shape: tuple[int, int]) -> Tensor:
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = (boxes[:, 2:] - boxes[:, :2]) * (self.scale / 2)
        size = boxes.new_tensor([shape[1], shape[0]])
        return torch.cat([(centre - half).clamp(min=0), torch.minimum(centre + half, size)], 1)


class RepetitionFeatures(ExtraFPNBlock):  # type: ignore[misc]  # FPN checks the type
    """Local self-similarity (Shechtman and Irani, CVPR 2007) added to every pyramid level: at each
    position, the cosine between its feature and the feature `r` cells away, for radii `RADII`
    along 4 directions both ways (the larger of each opposite pair: 20 maps), mapped by a 1x1
    convolution and added to the level. A tile of a checkerboard looks like a square to any
    filter that sees only it and its border; what gives it away is that the same feature recurs
    at a lattice's period all around, which an object on a background does not. The cue is the
    same whatever the repeated shape is, so a rule learnt on repeated circles or bricks can
    carry over to repeated squares. Then the usual extra level (torchvision's
    `LastLevelMaxPool`)."""

    RADII = (2, 3, 5, 8, 12)
    DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))
    COMPARED = 8  # channels the cosine compares: a learnt projection, for a quarter the cost

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(channels, self.COMPARED, 1, bias=False)
        self.offsets = [(dy * r, dx * r) for r in self.RADII for dy, dx in self.DIRECTIONS]
        self.mix = nn.Conv2d(len(self.offsets), channels, 1)
        self.silence()
        self.pool = LastLevelMaxPool()

    def silence(self) -> None:
        """Zero the cue's weights: the detector starts as the plain one and training decides
        what the cue is worth."""
        assert self.mix.bias is not None
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def similarity(self, x: Tensor) -> Tensor:
        x = self.project(x)
        unit = x / (x.norm(dim=1, keepdim=True) + 1e-6)
        reach = max(self.RADII)
        padded = nn.functional.pad(unit, (reach, reach, reach, reach))
        height, width = x.shape[-2:]
        maps = []
        for dy, dx in self.offsets:
            ahead = padded[:, :, reach + dy:reach + dy + height, reach + dx:reach + dx + width]
            behind = padded[:, :, reach - dy:reach - dy + height, reach - dx:reach - dx + width]
            maps.append(torch.maximum((unit * ahead).sum(1), (unit * behind).sum(1)))
        return torch.stack(maps, 1)

    def forward(self, results: list[Tensor], x: list[Tensor],
                names: list[str]) -> tuple[list[Tensor], list[str]]:
        results = [level + self.mix(self.similarity(level)) for level in results]
        out: tuple[list[Tensor], list[str]] = self.pool(results, x, names)
        return out


def tiny_fasterrcnn(
    num_classes: int = 4,
    min_size: int = 320,
    max_size: int = 512,
    widths: tuple[int, int, int, int] = TINY_WIDTHS,
    fpn_channels: int = 32,
    representation: int = 128,
    ibn: int = 0,
    context: float = 0.0,
    repetition: bool = False,
) -> FasterRCNN:
    """torchvision's Faster R-CNN on a TinyResNet + narrow FPN; ~0.6 M parameters as defaulted
    (the edge teacher), ~0.15 M at `SMALL_WIDTHS` (the device's own model). `context` > 0: the
    box head also sees each box's surround, that many times its size (`ContextRoIPool`).
    `repetition`: every pyramid level also carries its self-similarity (`RepetitionFeatures`)."""
    body = TinyResNet(widths=widths, ibn=ibn)
    del body.avgpool, body.fc  # IntermediateLayerGetter stops at layer4 anyway; keep it lean
    backbone = BackboneWithFPN(
        body,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=list(widths),
        out_channels=fpn_channels,
        extra_blocks=RepetitionFeatures(fpn_channels) if repetition else None,
    )
    if repetition:  # the FPN re-initializes every convolution it holds
        backbone.fpn.extra_blocks.silence()
    anchors = AnchorGenerator(
        sizes=((16,), (32,), (64,), (128,), (256,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5
    )
    regions = 2 if context else 1
    return FasterRCNN(
        backbone,
        num_classes=None,
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=100,
        box_roi_pool=ContextRoIPool(context) if context else None,
        box_head=TwoMLPHead(regions * fpn_channels * 7 * 7, representation),
        box_predictor=FastRCNNPredictor(representation, num_classes),
        box_detections_per_img=50,
    )
