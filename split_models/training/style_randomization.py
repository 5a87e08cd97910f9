"""Style randomization at training time: change how a frame looks, never where its objects are.

Two domain-generalization augmentations from the literature, for a detector that must work on
looks its generator never drew (issue 9's shifted set):

- `random_convolution` (RandConv, Xu et al., ICLR 2021): a random 3→3 convolution of random
  kernel size re-textures the whole frame (edges, colours, local contrast) while the shapes stay;
  mixed with the original at a random weight.
- `amplitude_mix` (FACT, Xu et al., CVPR 2021): the Fourier amplitude of another training frame,
  blended into this one's, keeps this frame's phase — its structure — under that frame's
  colours and textures.

Both take their randomness from the step's torch generator, so a step's batch is the same bytes
on every run (the training loop resumes mid-run).

And one in feature space, for the teacher (`teacher.mixstyle`):

- `MixStyle` (Zhou et al., ICLR 2021): in the backbone's early stages, each frame's per-channel
  feature mean and spread (its "style") are mixed with another frame's of the batch; the
  normalized content stays. The frame itself is untouched, so unlike RandConv the detector never
  sees a re-textured image it must still read — the task is no harder, only its styles blur.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

Image = npt.NDArray[np.uint8]

KERNEL_SIZES = (1, 3, 5, 7)


def random_convolution(image: Image, generator: torch.Generator) -> Image:
    """A random convolution of the frame, rescaled to its brightness and contrast, mixed with it."""
    size = KERNEL_SIZES[int(torch.randint(len(KERNEL_SIZES), (1,), generator=generator))]
    # He-style scale: the output's variance stays that of the input whatever the kernel size
    weight = torch.randn(3, 3, size, size, generator=generator) / float(np.sqrt(3 * size * size))
    mix = float(torch.rand(1, generator=generator))
    x = torch.from_numpy(image).permute(2, 0, 1).float().unsqueeze(0) / 255.0
    out = F.conv2d(F.pad(x, [size // 2] * 4, mode="reflect"), weight)
    # per channel to zero mean / unit spread, then to the frame's own mean and spread: the new
    # look keeps the frame's exposure, so the randomness is texture and colour, not a wash-out
    out = (out - out.mean(dim=(2, 3), keepdim=True)) / (out.std(dim=(2, 3), keepdim=True) + 1e-6)
    out = out * (x.std() + 1e-3) + x.mean()
    mixed = (mix * x + (1 - mix) * out).clamp(0, 1)
    return np.ascontiguousarray(
        (mixed[0].permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()
    )


def amplitude_mix(image: Image, other: Image, generator: torch.Generator) -> Image:
    """This frame's phase under a blend of its and `other`'s Fourier amplitudes (same size)."""
    if image.shape != other.shape:
        raise ValueError(f"amplitude_mix needs frames of one size, got {image.shape}, "
                         f"{other.shape}")
    weight = float(torch.rand(1, generator=generator))
    spectrum = np.fft.rfft2(image.astype(np.float32), axes=(0, 1))
    amplitude = (1 - weight) * np.abs(spectrum) + weight * np.abs(
        np.fft.rfft2(other.astype(np.float32), axes=(0, 1)))
    mixed = np.fft.irfft2(amplitude * np.exp(1j * np.angle(spectrum)), s=image.shape[:2],
                          axes=(0, 1))
    return np.ascontiguousarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8))


class MixStyle:
    """MixStyle as forward hooks on a model's `layers` (children named so, e.g. a ResNet's
    "layer1", "layer2"): while the model trains, each of those layers, with probability `p` per
    batch and independently of the others, makes each sample's feature statistics a Beta(α, α)
    mix of its own and a random other sample's. A no-op
    in eval mode, and nothing is added to the state dict: the exported model is the same model.

    Its randomness comes from `reseed(seed, step)` (numpy), so a resumed run mixes as an
    uninterrupted one would."""

    def __init__(self, model: torch.nn.Module, p: float, layers: tuple[str, ...] = (
            "layer1", "layer2"), alpha: float = 0.1) -> None:  # fmt: skip
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"MixStyle p is a probability, got {p}")
        self.p, self.alpha = p, alpha
        self.rng = np.random.default_rng(0)
        hooked = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in layers]
        if not hooked:
            raise ValueError(f"MixStyle: the model has no child named {layers}")
        self.handles = [m.register_forward_hook(self._hook) for m in hooked]

    def reseed(self, seed: int, step: int) -> None:
        self.rng = np.random.default_rng([seed, step, 0x5717])

    def _hook(self, module: torch.nn.Module, _inputs: object, output: torch.Tensor,
              ) -> torch.Tensor | None:  # fmt: skip
        batch = output.shape[0]
        if not module.training or batch < 2 or self.rng.random() >= self.p:
            return None
        mean = output.mean(dim=(2, 3), keepdim=True).detach()
        std = (output.var(dim=(2, 3), keepdim=True) + 1e-6).sqrt().detach()
        weight = torch.from_numpy(self.rng.beta(self.alpha, self.alpha, (batch, 1, 1, 1))).to(
            output.dtype)
        other = torch.from_numpy(self.rng.permutation(batch))
        mixed_mean = weight * mean + (1 - weight) * mean[other]
        mixed_std = weight * std + (1 - weight) * std[other]
        return (output - mean) / std * mixed_std + mixed_mean

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
