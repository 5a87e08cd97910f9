"""Tables and latents that look like trained ones, without torch."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from shared.codecs import FactorizedTables


def laplace_tables(
    channels: int, half_width: int = 12, scales: tuple[float, float] = (0.3, 4.0), seed: int = 0
) -> FactorizedTables:
    """Per-channel discretized Laplace priors in compressai's table layout (16-bit CDFs, every
    symbol non-empty, an overflow entry last)."""
    rng = np.random.default_rng(seed)
    pmf_length = 2 * half_width + 1
    length = pmf_length + 2
    cdf = np.zeros((channels, length), dtype=np.int32)
    values = np.arange(-half_width, half_width + 1)
    for c in range(channels):
        b = rng.uniform(*scales)
        pmf = np.exp(-np.abs(values) / b)
        pmf = np.append(pmf / pmf.sum() * (1 - 1e-4), 1e-4)  # last entry: the overflow symbol
        freq = np.maximum(1, np.round(pmf * (1 << 16) - 0.5)).astype(np.int64)
        freq[np.argmax(freq)] += (1 << 16) - freq.sum()
        cdf[c, 1:] = np.cumsum(freq)
    return FactorizedTables(
        quantized_cdf=cdf,
        cdf_length=np.full(channels, length, dtype=np.int32),
        offset=np.full(channels, -half_width, dtype=np.int32),
        medians=rng.normal(0, 0.2, channels).astype(np.float32),
    )


def trained_looking_latent(
    shape: tuple[int, int, int], seed: int = 0, outlier_share: float = 0.0
) -> npt.NDArray[np.float32]:
    """A Laplace-distributed latent with per-channel scales, a few outliers if asked."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.3, 4.0, size=(shape[0], 1, 1))
    latent = rng.laplace(0.0, 1.0, size=shape) * scale
    if outlier_share:
        mask = rng.random(shape) < outlier_share
        latent[mask] = rng.choice([-1, 1], mask.sum()) * rng.uniform(20, 5000, mask.sum())
    return latent.astype(np.float32)
