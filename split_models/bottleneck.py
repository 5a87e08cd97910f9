"""The learned bottleneck: a slimmable encoder on the head, a decoder on each tail, and the
factorized prior (compressai's EntropyBottleneck) on the latent between them.

Encoder: stem features (stride s) → latent of C·w channels at stride s·`stride` (HND's
bottleneck, slimmable). Decoder: any width's latent → the teacher's tensor at the split point.
The prior: in training, additive uniform noise and likelihoods (rate = −log2 likelihoods); in
eval, hard quantization around the medians — exactly what the device codec does, so the tail
sees the same dequantized latent either way.
"""

from __future__ import annotations

from typing import Any

import torch
from compressai.entropy_models import EntropyBottleneck
from torch import nn

from split_models.slimmable import SlimmableConv2d, SwitchableBatchNorm2d, channels_at


class Encoder(nn.Module):
    """stem features → latent (pre-quantization). Inner and output widths are slimmable."""

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        widths: tuple[float, ...],
        inner_channels: int,
        stride: int,
    ) -> None:
        super().__init__()
        inner = channels_at(inner_channels, widths)
        self.latent_widths = channels_at(latent_channels, widths)
        self.layers = nn.Sequential(
            SlimmableConv2d(in_channels, inner, 3, bias=False),
            SwitchableBatchNorm2d(inner),
            nn.ReLU(inplace=True),
            SlimmableConv2d(inner, inner, 3, stride=stride, bias=False),
            SwitchableBatchNorm2d(inner),
            nn.ReLU(inplace=True),
            SlimmableConv2d(inner, self.latent_widths, 3),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        latent: torch.Tensor = self.layers(features)
        return latent


class Decoder(nn.Module):
    """latent of any width → the teacher's tensor at the split point.

    The width is read from the latent's channel count, so the edge needs no set-call: the first
    conv uses its first k input filters (= zero-padding the missing channels) and that width's
    batch-norm statistics.
    """

    def __init__(
        self,
        latent_widths: tuple[int, ...],
        out_channels: int,
        inner_channels: int,
        upsample: int,
    ) -> None:
        super().__init__()
        self.latent_widths = latent_widths
        self.conv_in = nn.Conv2d(max(latent_widths), inner_channels, 3, padding=1, bias=False)
        self.bn_in = SwitchableBatchNorm2d((inner_channels,) * len(latent_widths))
        layers: list[nn.Module] = [nn.ReLU(inplace=True)]
        if upsample > 1:
            layers += [
                nn.ConvTranspose2d(
                    inner_channels, inner_channels, upsample, stride=upsample, bias=False
                ),
                nn.BatchNorm2d(inner_channels),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(inner_channels, out_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        channels = latent.shape[1]
        if channels not in self.latent_widths:
            raise ValueError(
                f"latent has {channels} channels; the decoder takes {self.latent_widths}"
            )
        self.bn_in.width_index = self.latent_widths.index(channels)
        x = nn.functional.conv2d(latent, self.conv_in.weight[:, :channels], None, 1, 1)
        restored: torch.Tensor = self.layers(self.bn_in(x))
        return restored


class LatentPrior(nn.Module):
    """compressai's EntropyBottleneck over the full width; a slim latent uses its channel prefix
    (the device codec does the same with the first k tables)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.entropy_bottleneck = EntropyBottleneck(channels)

    def forward(
        self, latent: torch.Tensor, rounding: str = "noise"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent_hat, likelihoods): noisy in training, quantized around the medians in eval.

        rounding="mixed" (training only): the likelihoods still come from the noisy latent (a
        differentiable rate), but latent_hat is the rounded latent with a straight-through
        gradient, so the tails learn on what the wire carries and the encoder learns to put its
        information where rounding keeps it (Minnen & Singh 2020, "mixed" quantization).
        """
        full = self.entropy_bottleneck.channels
        channels = latent.shape[1]
        # The prior covers C channels; a slim latent is zero-padded and the padding ignored.
        padded = nn.functional.pad(latent, (0, 0, 0, 0, 0, full - channels))
        latent_hat, likelihoods = self.entropy_bottleneck(padded)
        latent_hat, likelihoods = latent_hat[:, :channels], likelihoods[:, :channels]
        if rounding == "mixed" and self.training:
            latent_hat = latent + (self.quantize(latent) - latent).detach()
        elif rounding not in ("noise", "mixed"):
            raise ValueError(f"rounding must be 'noise' or 'mixed', got {rounding!r}")
        return latent_hat, likelihoods

    @torch.no_grad()
    def coded_bits(self, latent: torch.Tensor) -> torch.Tensor:
        """(B,) bits of each frame's latent rounded as the device codes it, under the prior's
        density (what the ANS coder writes, to within its tables' precision): the rate a device
        will see, where training's noisy likelihoods overstate it, by a different factor per
        width (the demo recipe's stage 1: x1.1 at width 0.25, x1.5 at 1.0)."""
        full = self.entropy_bottleneck.channels
        padded = nn.functional.pad(latent, (0, 0, 0, 0, 0, full - latent.shape[1]))
        _, likelihoods = self.entropy_bottleneck(padded, training=False)
        bits: torch.Tensor = -torch.log2(likelihoods[:, : latent.shape[1]]).sum((1, 2, 3))
        return bits

    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        """Inference: round(latent − median) + median, as the device codec quantizes."""
        medians: torch.Tensor = self.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1)
        medians = medians[:, : latent.shape[1]]
        return torch.round(latent - medians) + medians

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # update() sizes the CDF buffers to the tables; a fresh prior has them empty. Resize
        # first, as compressai's `update_registered_buffers` does for its models.
        for name in ("_offset", "_quantized_cdf", "_cdf_length"):
            key = f"{prefix}entropy_bottleneck.{name}"
            if key in state_dict:
                getattr(self.entropy_bottleneck, name).resize_(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def loss(self) -> torch.Tensor:
        """compressai's auxiliary loss that fits the quantiles (train it with its own optimizer)."""
        loss: torch.Tensor = self.entropy_bottleneck.loss()
        return loss
