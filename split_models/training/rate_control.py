"""Stage 1 steered to a rate (`student.rate_target`) instead of trained at a fixed λ.

The rate weight λ of the Entropic Student's loss buys whatever rate the teacher's features make
optimal: the shipped demo bundle and a fresh `make bundle` of its recipe send 0.38 and 0.52 KB
per frame at width 1.0, and the scheduler, the link budget and every bytes figure of the report
read that number. Here each width's λ starts at `rate_lambda` and is multiplied, every `every` steps
once the rate has settled from its start, by (smoothed rate ÷ target) ** `gain`, the factor
clipped to [1 / `max_step`, `max_step`] so that one noisy window cannot swing it. The rate is
what the device's coder will send (the prior's density on the rounded latent), not the noisy
likelihoods that train the encoder.

It is an `nn.Module` with buffers only, so the stage's checkpoint carries its λs and a resumed
run steers on from where it stopped. Measured (reports/demo-shapes/rate.md): two teachers land
within 0.3 % of each other, 1–3 % above the target; the demo recipe does not use it.
"""

from __future__ import annotations

import torch
from torch import nn

START = 100  # the first steps move the rate far more than λ does: steer after them
EVERY = 25  # steps between updates: the encoder needs some to answer a new λ
# the rate moves as about λ^-0.3 (the demo recipe at width 1.0: λ 1.5 → 2.5 took stage 1 from
# 950 to 818 B), so a gain of 2 closes ~60 % of a gap per update: quick, and short of the
# overshoot that the encoder's lag in answering a new λ would swing into
GAIN = 2.0
MAX_STEP = 1.25
SMOOTHING = 0.2  # the exponential mean's weight of a new step's rate


class RateControl(nn.Module):
    """Per width: λ, and the smoothed bytes per frame the coder would send."""

    lambdas: torch.Tensor
    targets: torch.Tensor
    rates: torch.Tensor

    def __init__(self, widths: tuple[float, ...], lambdas: list[float], targets: list[float],
                 start: int = START, every: int = EVERY, gain: float = GAIN,
                 max_step: float = MAX_STEP) -> None:
        super().__init__()
        if not len(widths) == len(lambdas) == len(targets):
            raise ValueError(f"{len(widths)} widths, {len(lambdas)} λs, {len(targets)} targets")
        self.widths = tuple(widths)
        self.start, self.every, self.gain, self.max_step = start, every, gain, max_step
        self.register_buffer("lambdas", torch.tensor(lambdas, dtype=torch.float64))
        self.register_buffer("targets", torch.tensor(targets, dtype=torch.float64))
        # the smoothed rates start at the targets: a width not yet seen asks for no change, and
        # the first START steps wash the start value out
        self.register_buffer("rates", self.targets.clone())

    def weight(self, width: float) -> float:
        """λ of `width` now."""
        return float(self.lambdas[self.widths.index(width)])

    def observe(self, width: float, bytes_per_frame: float) -> None:
        """One step's rate of `width` (mean bytes per frame of its batch)."""
        k = self.widths.index(width)
        self.rates[k] = (1 - SMOOTHING) * self.rates[k] + SMOOTHING * bytes_per_frame

    def step(self, index: int) -> None:
        """After step `index`: update every width's λ when an update is due."""
        if index < self.start or (index + 1) % self.every:
            return
        factor = (self.rates / self.targets).pow(self.gain)
        self.lambdas.mul_(factor.clamp(1 / self.max_step, self.max_step))

    def logged(self) -> dict[str, float]:
        """λ and the smoothed rate per width, for the stage's history."""
        found: dict[str, float] = {}
        for k, width in enumerate(self.widths):
            found[f"lambda@{width:g}"] = float(self.lambdas[k])
            found[f"bytes@{width:g}"] = float(self.rates[k])
        return found
