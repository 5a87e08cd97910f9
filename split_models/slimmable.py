"""Slimmable layers (Yu et al., "Slimmable Neural Networks"): one set of weights, several widths.

A width is an index into the layer's tuple of channel counts. Convolutions run the first
`out_widths[i]` filters on the first `in_widths[i]` input channels; batch norm keeps separate
statistics (and affine parameters) per width, because a narrower layer sees other activations.
Switching is setting an int: no weights move, nothing reloads.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn


class SlimmableConv2d(nn.Conv2d):
    """A conv whose widths are `in_widths[i]` → `out_widths[i]` at width index i.

    A fixed input (an int) is used whole. Python ints, not tensor shapes, pick the slices, so an
    ONNX export at one width folds them into plain weights.
    """

    def __init__(
        self,
        in_widths: int | tuple[int, ...],
        out_widths: tuple[int, ...],
        kernel_size: int,
        stride: int = 1,
        bias: bool = True,
    ) -> None:
        in_widths = in_widths if isinstance(in_widths, tuple) else (in_widths,) * len(out_widths)
        super().__init__(
            max(in_widths), max(out_widths), kernel_size, stride, kernel_size // 2, bias=bias
        )
        self.in_widths, self.out_widths = in_widths, out_widths
        self.width_index = len(out_widths) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = self.width_index
        weight = self.weight[: self.out_widths[i], : self.in_widths[i]]
        bias = self.bias[: self.out_widths[i]] if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding)


class SwitchableBatchNorm2d(nn.Module):
    """One BatchNorm2d per width; the active one is `bns[width_index]`."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.widths = widths
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in widths)
        self.width_index = len(widths) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bns[self.width_index](x)
        return out


def set_width_index(module: nn.Module, index: int) -> None:
    """Switch every slimmable layer inside `module` to width `index`."""
    for layer in module.modules():
        if isinstance(layer, SlimmableConv2d | SwitchableBatchNorm2d):
            layer.width_index = index


def channels_at(base: int, fractions: tuple[float, ...]) -> tuple[int, ...]:
    """Channel count per width fraction, at least one, strictly increasing."""
    counts = tuple(max(1, round(base * f)) for f in fractions)
    if any(b <= a for a, b in pairwise(counts)):
        raise ValueError(f"widths {fractions} of {base} channels give {counts}: not increasing")
    return counts
