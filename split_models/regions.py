"""Where a frame holds objects, on the device: P(object) per region cell, from the latent.

The device codes only the cells this head marks (shared.codecs.Regions); the rest of the latent
reaches the edge as the prior's medians. Measured on bundle v5 with the labelled boxes as the
mask: a third of the cells keep every object, the tails lose nothing, and the bytes fall by
more than half (background held ~70 % of them, `benchmarks/latent_bits.py`).

Why on the latent and not on the prefilter's map: the prefilter sees one 7×7 conv of the image
(its stem), and a cell in the middle of a large flat shape looks like background there; trained
per cell it kept 93 % of the cells to find 97 % of the objects' cells. The latent has the
encoder's receptive field, and this head adds ~240 px more at stride 16 for 20–22 M
multiply-adds (the bundle's heads: 67–158 M without it).
"""

from __future__ import annotations

import torch
from torch import nn

DILATIONS = (1, 2, 4)  # at stride 16: ~15 cells (240 px) of context on top of the encoder's


class RegionHead(nn.Module):
    """latent of any width (C·w, H, W) → logits (1, ceil(H / cell), ceil(W / cell)).

    A stride-2 conv, three dilated convs, then each cell's maximum. The first conv uses its first k
    input filters for a k-channel latent (as the decoder does), so one head serves every width;
    no batch norm, so no per-width statistics to keep."""

    def __init__(self, latent_channels: int, channels: int, cell: int) -> None:
        super().__init__()
        if cell < 2 or cell % 2:
            raise ValueError(f"a region cell is an even number of latent positions, got {cell}")
        self.pool = cell // 2
        self.conv_in = nn.Conv2d(latent_channels, channels, 3, stride=2, padding=1)
        layers: list[nn.Module] = []
        for dilation in DILATIONS:
            layers += [nn.ReLU(inplace=True),
                       nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)]
        self.context = nn.Sequential(*layers, nn.ReLU(inplace=True), nn.Conv2d(channels, 1, 1))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        channels = latent.shape[1]
        x = nn.functional.conv2d(latent, self.conv_in.weight[:, :channels], self.conv_in.bias,
                                 stride=2, padding=1)
        logits: torch.Tensor = self.context(x)
        if self.pool > 1:
            logits = nn.functional.max_pool2d(logits, self.pool, ceil_mode=True)
        return logits
