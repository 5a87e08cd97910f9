"""Regions of interest end to end: the region head's grid fits the latent at every width and
frame shape; an exported bundle's device codes exactly the cells its head marks (as the PyTorch
head computes them), and the edge decodes the rest as the prior's medians."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

torch = pytest.importorskip("torch")

from device_client.head import HeadRunner, Prepared  # noqa: E402
from shared.bundle import load_bundle  # noqa: E402
from shared.bundle.manifest import Manifest  # noqa: E402
from split_models.export import export_bundle  # noqa: E402
from split_models.regions import RegionHead  # noqa: E402
from split_models.split import SplitConfig, build_student  # noqa: E402
from split_models.teachers import build_teacher  # noqa: E402
from tests.bundles import Demo, frame, spread_scores  # noqa: E402

THRESHOLDS = {0.5: 0.45, 1.0: 0.55}


@pytest.mark.parametrize("height, width", [(32, 40), (31, 39), (5, 3), (1, 1)])
@pytest.mark.parametrize("cell", [2, 4, 6])
def test_the_grid_covers_the_latent_at_every_width(height: int, width: int, cell: int) -> None:
    head = RegionHead(12, 8, cell)
    for channels in (3, 12):  # a slim latent uses the first filters
        logits = head(torch.randn(2, channels, height, width))
        assert logits.shape == (2, 1, -(-height // cell), -(-width // cell))


def test_a_region_cell_is_even() -> None:
    with pytest.raises(ValueError, match="even"):
        RegionHead(12, 8, 3)


@pytest.fixture(scope="module")
def regional(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    torch.manual_seed(1)
    teachers = {"detection": ("tiny_fasterrcnn",
                              spread_scores(build_teacher("tiny_fasterrcnn")))}
    student = build_student(teachers, SplitConfig(inner_channels=16, widths=(0.5, 1.0),
                                                  region_channels=8, roi_cell=2))
    with torch.no_grad():  # spread the random head's scores, as training would
        assert student.head.regions is not None
        student.head.regions.context[-1].weight.mul_(100.0)
    root = export_bundle(student, teachers, tmp_path_factory.mktemp("regions") / "b",
                         name="regions", version="1", regions_thresholds=THRESHOLDS,
                         sample=frame(240, 320), repeats=1)
    return Demo(root, student, {"detection": teachers["detection"][1]})


@pytest.mark.parametrize("shape", [(240, 320), (300, 200)])
@pytest.mark.parametrize("width", [0.5, 1.0])
def test_the_device_codes_the_cells_its_head_marks(regional: Demo, width: float,
                                                  shape: tuple[int, int]) -> None:
    manifest = load_bundle(regional.root).manifest
    assert manifest.regions is not None and manifest.regions.cell == 2
    assert {h.width: h.regions_threshold for h in manifest.heads} == THRESHOLDS
    runner = HeadRunner.load(regional.root)
    runner.set_width(width)
    head_input = runner.preprocess(frame(*shape, seed=shape[0]))
    regional.student.set_width(width)
    with torch.no_grad():
        latent, _, regions = regional.student.head.with_regions(
            torch.from_numpy(head_input.image))
    regional.student.set_width(1.0)
    # a threshold between this frame's scores (a random head's sit anywhere): some cells coded,
    # some not, so the test can tell
    # (mid-way across the widest gap near the median: onnxruntime's scores differ from torch's in
    # the last bits, so no score may sit on the threshold)
    ranked = np.sort(regions[0, 0].numpy().ravel())
    middle = len(ranked) // 2
    k = max(range(middle - 20, middle + 20), key=lambda i: ranked[i] - ranked[i - 1])
    assert ranked[k] - ranked[k - 1] > 1e-4
    threshold = float(ranked[k - 1] + ranked[k]) / 2
    runner.region_thresholds[width] = threshold
    cells = regions[0, 0].numpy() >= threshold
    assert 0 < cells.sum() < cells.size
    coded = runner.encode(Prepared(head_input, None, {}))
    assert coded.payload is not None and coded.latent is not None
    assert len(coded.payload.strings) == 3
    kept = np.repeat(np.repeat(cells, 2, 0), 2, 1)[: latent.shape[2], : latent.shape[3]]
    decoded = runner.codec.decode(coded.payload)
    expected = runner.codec.dequantize(runner.codec.quantize(latent[0].numpy()))
    np.testing.assert_allclose(decoded[:, kept], expected[:, kept], atol=1e-5)
    medians = runner.codec.tables.medians[: decoded.shape[0], None]
    np.testing.assert_array_equal(decoded[:, ~kept], np.broadcast_to(
        medians, (decoded.shape[0], int((~kept).sum()))))

    everything = HeadRunner(load_bundle(regional.root), use_regions=False)
    everything.set_width(width)
    whole = everything.encode(Prepared(head_input, None, {})).payload
    assert whole is not None and len(whole.strings) == 2
    assert coded.payload.nbytes < whole.nbytes


def test_a_bundle_without_regions_codes_every_position(demo: Demo) -> None:
    manifest = load_bundle(demo.root).manifest
    assert manifest.regions is None and all(h.regions_threshold is None for h in manifest.heads)
    coded = HeadRunner.load(demo.root).run(frame(240, 320))
    assert coded.payload is not None and len(coded.payload.strings) == 2


def test_a_manifest_that_codes_regions_needs_every_heads_threshold(regional: Demo,
                                                                   tmp_path: Path) -> None:
    raw = load_bundle(regional.root).manifest.model_dump()
    raw["heads"][0]["regions_threshold"] = None
    with pytest.raises(ValidationError, match="regions_threshold"):
        Manifest.model_validate(raw)


def test_regions_thresholds_need_a_region_head(demo: Demo, tmp_path: Path) -> None:
    teachers = {"detection": ("tiny_fasterrcnn", demo.teachers["detection"])}
    with pytest.raises(ValueError, match="region head"):
        export_bundle(demo.student, teachers, tmp_path / "b", name="x",
                      regions_thresholds={1.0: 0.5})
