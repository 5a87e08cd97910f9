"""Tables exported from a real compressai EntropyBottleneck decode exactly as compressai does,
with the torch-free coder. (This test imports torch; the codec under test does not.)"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
entropy_models = pytest.importorskip("compressai.entropy_models")

from shared.codecs import FactorizedAnsCodec, FactorizedTables  # noqa: E402
from split_models.entropy import export_tables  # noqa: E402


@pytest.fixture(scope="module")
def fitted_bottleneck():
    """An EntropyBottleneck fitted for a few steps on Laplace-like latents of varied scales."""
    torch.manual_seed(0)
    channels = 6
    bottleneck = entropy_models.EntropyBottleneck(channels)
    optimizer = torch.optim.Adam(bottleneck.parameters(), lr=1e-2)
    scales = torch.linspace(0.5, 6.0, channels).view(1, channels, 1, 1)
    for _ in range(150):
        latent = torch.distributions.Laplace(0.0, 1.0).sample((4, channels, 8, 8)) * scales + 1.3
        _, likelihoods = bottleneck(latent)
        loss = -torch.log2(likelihoods).mean() + bottleneck.loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    bottleneck.update(force=True)
    return bottleneck.eval()


def test_torch_free_codec_decodes_what_compressai_decodes(fitted_bottleneck, tmp_path) -> None:
    tables = export_tables(fitted_bottleneck)
    tables.save(tmp_path / "entropy.npz")
    codec = FactorizedAnsCodec(FactorizedTables.load(tmp_path / "entropy.npz"))
    generator = torch.Generator().manual_seed(1)
    latent = torch.randn((1, 6, 10, 14), generator=generator) * 5 + 1.3
    latent[0, 2, 3, 4] = 900.0  # far outside every table: compressai bypass-codes it, we escape it
    latent[0, 5, 0, 0] = -700.0

    strings = fitted_bottleneck.compress(latent)
    reference = fitted_bottleneck.decompress(strings, latent.shape[-2:]).numpy()[0]
    ours = codec.decode(codec.encode(latent.numpy()))

    np.testing.assert_array_equal(ours, reference)
    assert ours[2, 3, 4] == pytest.approx(900.0, abs=0.5)
    # Same prior, same information: our bytes stay within a few percent of compressai's rANS.
    assert codec.encode(latent.numpy()).nbytes <= len(strings[0]) * 1.10 + 16


def test_export_requires_update() -> None:
    with pytest.raises(ValueError, match="update"):
        export_tables(entropy_models.EntropyBottleneck(3))
