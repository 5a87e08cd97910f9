"""The shipped demo bundle's manifest: the branch profiles a scheduler plans with are there, are
the test split's (not one frame's), and agree with the files."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from shared.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[1] / "bundles" / "demo-shapes"


def test_every_remote_branch_has_a_measured_profile() -> None:
    manifest = load_bundle(ROOT).manifest
    remote = [b for b in manifest.branches if b.kind in ("split", "jpeg", "webp")]
    assert {b.kind for b in remote} == {"split", "jpeg", "webp"}
    for branch in remote:
        assert branch.expected_bytes and branch.bytes_p50 and branch.bytes_p95, branch.id
        assert branch.bytes_p95 >= branch.expected_bytes * 0.9, branch.id  # a tail, not a typo
        assert branch.bytes_p95 >= branch.bytes_p50, branch.id
        assert branch.device_ms and branch.device_ms_p95, branch.id
        assert branch.device_ms_p95 >= branch.device_ms, branch.id
        assert branch.accuracy is not None and 0 < branch.accuracy <= 1, branch.id
    for branch in remote:
        if branch.kind in ("jpeg", "webp"):
            assert branch.id == f"{branch.kind}-q{branch.quality}"
    # an image branch costs more bytes the higher its quality
    for kind in ("jpeg", "webp"):
        ladder = sorted((b.quality or 0, b.expected_bytes or 0) for b in remote if b.kind == kind)
        assert [q for q, _ in ladder] == [30, 50, 70, 90]
        assert all(a[1] < b[1] for a, b in pairwise(ladder))


def test_split_branches_match_the_heads_they_run() -> None:
    manifest = load_bundle(ROOT).manifest
    heads = {head.width: head for head in manifest.heads}
    for branch in manifest.branches:
        if branch.kind == "split":
            assert branch.width in heads
            assert branch.latent_channels == heads[branch.width].latent_channels
            assert branch.id == f"split-w{round((branch.width or 0) * 100):03d}"
    local = next(b for b in manifest.branches if b.kind == "local")
    assert local.expected_bytes == 0 and local.device_ms and local.accuracy


def test_the_widths_are_a_bandwidth_knob() -> None:
    # each width is its own rate point: bytes strictly grow with width, and the narrowest sends
    # at most half of what the widest does
    manifest = load_bundle(ROOT).manifest
    split = sorted((b.width or 0, b) for b in manifest.branches if b.kind == "split")
    sizes = [b.expected_bytes or 0 for _, b in split]
    assert all(a < b for a, b in pairwise(sizes)), sizes
    assert sizes[0] <= 0.5 * sizes[-1], sizes
    assert all(a.device_macs and b.device_macs and a.device_macs < b.device_macs
               for (_, a), (_, b) in pairwise(split))


def test_the_local_model_is_small_and_the_edge_answers_both_tasks() -> None:
    manifest = load_bundle(ROOT).manifest
    branches = {b.id: b for b in manifest.branches}
    local, full_frame = branches["local"], branches["jpeg-q90"]
    assert local.device_macs and full_frame.edge_macs
    # the edge's detection teacher, rebuilt from tail.pt and counted here, costs at least five
    # times the device's own model (whose count the manifest states)
    torch = pytest.importorskip("torch")
    from split_models.export import _LocalDetector, count_macs
    from split_models.runtime import TailRuntime

    teacher = TailRuntime.load(ROOT).teachers["detection"]
    frame = torch.zeros((240, 320, 3), dtype=torch.uint8)
    assert local.device_macs * 5 <= count_macs(_LocalDetector(teacher), frame)
    assert set(manifest.tasks) == {"detection", "classification"}
    assert set(manifest.local_files) == {"detection"}
    assert manifest.classes["classification"][0] == "none"


def test_the_fallback_answers_both_tasks_too() -> None:
    """The frame label is derived from detections: local.onnx's, when the edge is gone."""
    import numpy as np

    from device_client.local import LocalRunner
    from shared.results import largest_object_label

    local = LocalRunner.load(ROOT, threads=1)
    derived = local.bundle.manifest.derived["classification"]
    image = np.full((240, 320, 3), 40, np.uint8)
    image[60:180, 100:220] = (230, 200, 40)  # one large flat square on a dark frame
    results = local.run(image, ("detection", "classification"))
    found = local.detect(image)
    expected = largest_object_label(found.boxes, found.scores, found.labels,
                                    len(local.bundle.manifest.classes["classification"]),
                                    derived.min_score)
    assert [c.label_id for c in results.classifications] == [c.label_id for c in expected]
    assert results.classifications[0].label  # named from the manifest


def test_each_width_codes_its_regions_with_its_own_refit_tables() -> None:
    """The device's payloads for 60 generated benchmark frames: with each width's region CDFs,
    fewer bytes than with the prior's, the same latent at the edge."""
    from dataclasses import replace

    import numpy as np

    from device_client.config import GeneratedSource
    from device_client.head import HeadRunner
    from device_client.sources import ShapesGenerator
    from shared.codecs import FactorizedAnsCodec, Regions

    runner = HeadRunner.load(ROOT, threads=1)
    tables = runner.codec.tables
    heads = load_bundle(ROOT).manifest.heads
    assert sorted(tables.region_cdfs) == sorted(h.latent_channels for h in heads)
    prior = FactorizedAnsCodec(replace(tables, region_cdfs={}))
    generator = ShapesGenerator(GeneratedSource(kind="generated", width=320, height=240))
    for width in runner.widths:
        runner.set_width(width)
        refit_bytes = prior_bytes = 0
        for frame_id in range(0, 600, 10):
            head_input = runner.preprocess(generator.frame(frame_id))
            latent, _, cells = runner.sessions[runner.width].run(None, {"image": head_input.image})
            regions = Regions(cells[0, 0] >= runner.region_thresholds[runner.width],
                              runner.regions.cell)  # type: ignore[union-attr]
            refit = runner.codec.encode(latent[0], regions)
            by_prior = prior.encode(latent[0], regions)
            np.testing.assert_array_equal(runner.codec.decode(refit), prior.decode(by_prior))
            refit_bytes, prior_bytes = refit_bytes + refit.nbytes, prior_bytes + by_prior.nbytes
        assert refit_bytes < prior_bytes, width
