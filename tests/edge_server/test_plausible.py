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


def test_a_regions_payload_is_plausible_only_where_the_bundle_marks_regions(demo) -> None:
    from shared.bundle import RegionsSpec
    from shared.codecs import Regions

    plausibility, codec = demo
    manifest = plausibility.manifest
    regional = manifest.model_copy(update={
        "regions": RegionsSpec(cell=4),
        "heads": tuple(h.model_copy(update={"regions_threshold": 0.5}) for h in manifest.heads)})
    with_regions = LatentPlausibility.of(regional, codec.tables)
    plain = LatentPlausibility.of(manifest.model_copy(update={"regions": None}), codec.tables)
    branch = manifest.branches[3]
    shape = with_regions.expected_shape(branch, (240, 320))  # (C, 32, 40): an 8 x 10 grid
    latent = np.random.default_rng(0).normal(0, 2, shape).astype(np.float32)
    cells = np.zeros((8, 10), bool)
    cells[2:4, 3:6] = True
    payload = codec.encode(latent, Regions(cells, 4))
    with_regions.check(branch, CodecId.FACTORIZED_ANS, shape, payload.strings, (240, 320))
    # the floor counts the coded positions only: the whole grid's would refuse a real payload
    assert len(payload.strings[0]) < len(codec.encode(latent).strings[0]) / 4
    with pytest.raises(InvalidRequest, match="2 byte strings"):
        plain.check(branch, CodecId.FACTORIZED_ANS, shape, payload.strings, (240, 320))
    other_cell = codec.encode(latent, Regions(np.ones((16, 20), bool), 2))
    with pytest.raises(InvalidRequest, match="cells of 4"):
        with_regions.check(branch, CodecId.FACTORIZED_ANS, shape, other_cell.strings, (240, 320))
    for bad in (b"", b"\x04" + b"\xff" * 3, b"\x04" + b"\xff" * 11):
        with pytest.raises(InvalidRequest, match="regions"):
            with_regions.check(branch, CodecId.FACTORIZED_ANS, shape,
                               (*payload.strings[:2], bad), (240, 320))
    every = codec.encode(latent, Regions(np.ones((8, 10), bool), 4))
    with pytest.raises(InvalidRequest, match="cannot code"):  # all cells set, words cut short
        with_regions.check(branch, CodecId.FACTORIZED_ANS, shape,
                           (every.strings[0][:8], *every.strings[1:]), (240, 320))


def test_the_floor_holds_for_payloads_coded_with_region_tables(demo) -> None:
    """Region CDFs more peaked than the prior code a quiet latent in fewer words than the prior
    could: the floor takes each channel's least bits over both, so such a payload passes."""
    from dataclasses import replace

    from shared.bundle import RegionsSpec
    from shared.codecs import Regions

    plausibility, codec = demo
    manifest = plausibility.manifest.model_copy(update={
        "regions": RegionsSpec(cell=4),
        "heads": tuple(h.model_copy(update={"regions_threshold": 0.5})
                       for h in plausibility.manifest.heads)})
    branch = manifest.branches[3]
    shape = plausibility.expected_shape(branch, (240, 320))
    prior = replace(codec.tables, region_cdfs={})
    peaked = prior.with_region_cdfs({shape[0]: np.zeros((shape[0], 20000), np.int32)})
    quiet = np.broadcast_to(prior.medians[: shape[0], None, None], shape).astype(np.float32)
    regions = Regions(np.ones((8, 10), bool), 4)
    payload = FactorizedAnsCodec(peaked).encode(quiet, regions)
    by_prior = FactorizedAnsCodec(prior).encode(quiet, regions)
    assert len(payload.strings[0]) < len(by_prior.strings[0])
    LatentPlausibility.of(manifest, peaked).check(
        branch, CodecId.FACTORIZED_ANS, shape, payload.strings, (240, 320))
    with pytest.raises(InvalidRequest, match="cannot code"):  # the prior's floor alone refuses it
        LatentPlausibility.of(manifest, prior).check(
            branch, CodecId.FACTORIZED_ANS, shape, payload.strings, (240, 320))
