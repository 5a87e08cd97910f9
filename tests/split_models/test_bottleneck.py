"""The prior's two training roundings: what the tails see, and where the gradient goes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from split_models.bottleneck import LatentPrior  # noqa: E402


def _latent() -> torch.Tensor:
    torch.manual_seed(0)
    return (torch.randn(2, 3, 5, 7) * 3).requires_grad_(True)


def test_mixed_rounding_shows_the_tails_the_wire_latent_with_a_straight_through_gradient() -> None:
    prior = LatentPrior(4).train()
    latent = _latent()
    latent_hat, likelihoods = prior(latent, "mixed")
    # exactly what the device sends (rounded around the medians), not a noisy stand-in
    assert torch.equal(latent_hat, prior.quantize(latent))
    latent_hat.sum().backward()
    assert latent.grad is not None and torch.equal(latent.grad, torch.ones_like(latent))
    # the rate still comes from the noisy latent: a smooth, trainable bits estimate
    assert likelihoods.shape == latent.shape and likelihoods.requires_grad


def test_noise_rounding_adds_noise_in_training_and_rounds_in_eval() -> None:
    prior = LatentPrior(4).train()
    latent = _latent()
    noisy, _ = prior(latent)
    assert not torch.equal(noisy, prior.quantize(latent))
    assert (noisy - latent).abs().max() <= 0.5
    prior.eval()
    rounded, _ = prior(latent, "mixed")  # eval rounds whatever the training mode
    assert torch.equal(rounded, prior.quantize(latent))
    with pytest.raises(ValueError, match="rounding"):
        prior(latent, "floor")
