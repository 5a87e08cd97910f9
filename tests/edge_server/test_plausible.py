"""The plausibility bound never refuses what the real encoder writes, and refuses what it cannot
have written: checked against the shipped demo bundle's own tables and the real codec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_server.plausible import LatentPlausibility
from shared.bundle import load_bundle
from shared.codecs import CodecId, FactorizedAnsCodec, FactorizedTables
from shared.errors import InvalidRequest

DEMO = Path(__file__).resolve().parents[2] / "bundles" / "demo-shapes"


@pytest.fixture(scope="module")
def demo() -> tuple[LatentPlausibility, FactorizedAnsCodec]:
    if not DEMO.exists():
        pytest.skip("the demo bundle is not in this checkout")
    bundle = load_bundle(DEMO)
    tables = FactorizedTables.load(bundle.path(bundle.manifest.entropy_file))
    return LatentPlausibility.of(bundle.manifest, tables), FactorizedAnsCodec(tables)


@pytest.mark.parametrize("branch_index", [0, 1, 2, 3])
def test_every_real_encoding_passes_and_short_streams_do_not(demo, branch_index: int) -> None:
    plausibility, codec = demo
    branch = plausibility.manifest.branches[branch_index]
    assert branch.kind == "split"
    input_size = (240, 320)
    shape = plausibility.expected_shape(branch, input_size)
    rng = np.random.default_rng(branch_index)
    medians = codec.tables.medians[: shape[0], None, None]
    # The cheapest latent there is (every symbol at its channel's median) and noisy ones.
    latents = [np.broadcast_to(medians, shape).astype(np.float32)]
    latents += [medians + rng.normal(0, s, size=shape).astype(np.float32) for s in (0.3, 1, 4)]
    for latent in latents:
        payload = codec.encode(latent)
        assert payload.shape == shape
        plausibility.check(branch, CodecId.FACTORIZED_ANS, shape, payload.strings, input_size)
    words, escapes = codec.encode(latents[0]).strings
    for short in (b"", words[:4]):
        with pytest.raises(InvalidRequest, match="cannot code"):
            plausibility.check(branch, CodecId.FACTORIZED_ANS, shape, (short, escapes), input_size)


def test_shapes_follow_the_resize_rule_and_the_stride(demo) -> None:
    plausibility, _ = demo
    branch = plausibility.manifest.branches[3]
    channels = branch.latent_channels
    # Padded up to multiples of 32 (240x320 -> 256x320; 180 -> 192), then stride 8.
    assert plausibility.expected_shape(branch, (240, 320)) == (channels, 32, 40)
    assert plausibility.expected_shape(branch, (239, 319)) == (channels, 32, 40)
    assert plausibility.expected_shape(branch, (180, 320)) == (channels, 24, 40)
    for impossible in ((4096, 5456), (0, 320), (241, 330), (320, 320)):
        with pytest.raises(InvalidRequest, match="preprocessing"):
            plausibility.expected_shape(branch, impossible)


def test_a_fixed_size_bundle_takes_exactly_its_size(demo) -> None:
    """SSDLite-style bundles stretch every frame to one size: anything else was not a head's."""
    from shared.bundle import FixedResize

    plausibility, _ = demo
    manifest = plausibility.manifest
    fixed = manifest.model_copy(update={"preprocessing": manifest.preprocessing.model_copy(
        update={"resize": FixedResize(height=320, width=320)})})
    tables = FactorizedTables.load(load_bundle(DEMO).path(manifest.entropy_file))
    stretched = LatentPlausibility.of(fixed, tables)
    branch = fixed.branches[3]
    assert stretched.expected_shape(branch, (320, 320)) == (branch.latent_channels, 40, 40)
    for other in ((240, 320), (320, 321), (0, 320)):
        with pytest.raises(InvalidRequest, match="exactly 320×320"):
            stretched.expected_shape(branch, other)
