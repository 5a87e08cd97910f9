"""Tiny real training runs: each method lowers its loss, a student exports a bundle that loads
and infers on both sides, and a run stopped at a checkpoint resumes into the same weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from device_client.head import HeadRunner  # noqa: E402
from shared.bundle import load_bundle  # noqa: E402
from shared.codecs import FactorizedTables  # noqa: E402
from shared.errors import ConfigError  # noqa: E402
from split_models.data.synthetic import CLASSES  # noqa: E402
from split_models.evaluation.report import run_report  # noqa: E402
from split_models.runtime import TailRuntime  # noqa: E402
from split_models.training.config import Export, Optim, TeacherRef  # noqa: E402
from split_models.training.student import (  # noqa: E402
    StudentTrainer,
    choose_threshold,
    region_loss,
)
from split_models.training.student import train_student as run_student  # noqa: E402
from split_models.training.teacher import load_teacher, train_teacher  # noqa: E402
from tests.training.conftest import SCENE, experiment, optim, stopped_at  # noqa: E402


def _dropped(history: list[dict[str, float]], key: str) -> bool:
    first = np.mean([h[key] for h in history[:2]])
    last = np.mean([h[key] for h in history[-2:]])
    return bool(last < first)


@pytest.mark.parametrize(("name", "lr", "mixstyle"), [
    ("tiny_fasterrcnn", 0.01, 0.0), ("tiny_resnet", 0.01, 0.0), ("tiny_fasterrcnn", 0.01, 0.5)])
def test_teacher_loss_drops(shapes: Path, tmp_path: Path, name: str, lr: float,
                            mixstyle: float) -> None:
    # One image set, one batch: every step sees the same frames, so the loss must fall.
    result = train_teacher(experiment({
        "kind": "teacher", "out": str(tmp_path), "seed": 1,
        "data": {"train": str(shapes / "val.json"), "flip": False},
        "teacher": {"teacher": {"name": name, "min_size": 96, "max_size": 128},
                    "optim": optim(8, batch_size=6, optimizer="sgd", lr=lr),
                    "mixstyle": mixstyle},
    }), tmp_path)
    assert _dropped(result.history, "loss")
    saved = torch.load(tmp_path / "teacher.pt", weights_only=True)
    assert saved["classes"][1:] == list(CLASSES) and saved["num_classes"] == len(CLASSES) + 1


def test_teacher_average_is_saved_and_resumes(shapes: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # With `ema`, teacher.pt holds the running average, not the last SGD iterate; the average
    # lives in the checkpoint, so a run stopped half-way and resumed saves the same teacher.
    def run(out: Path) -> dict[str, Any]:
        train_teacher(experiment({
            "kind": "teacher", "out": str(out), "seed": 1,
            "data": {"train": str(shapes / "val.json"), "flip": False},
            "teacher": {"teacher": {"name": "tiny_fasterrcnn", "min_size": 96, "max_size": 128},
                        "optim": optim(4, batch_size=6, optimizer="sgd", lr=0.01),
                        "ema": 0.5},
        }), out)
        return torch.load(out / "teacher.pt", weights_only=True)  # type: ignore[no-any-return]

    whole = run(tmp_path / "whole")
    last = torch.load(tmp_path / "whole" / "teacher.ckpt", weights_only=False)["modules"]["model"]
    assert set(whole["model"]) == set(last)  # the detector's own keys, loadable as one
    assert any(v.is_floating_point() and not torch.equal(v, whole["model"][k])
               for k, v in last.items())
    with stopped_at(monkeypatch, 3):
        run(tmp_path / "stopped")
    resumed = run(tmp_path / "stopped")
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    load_teacher(TeacherRef("tiny_fasterrcnn", str(tmp_path / "whole" / "teacher.pt")))


def _student(shapes: Path, teacher: Path, out: Path, method: str, train: str = "val.json",
             **extra: Any) -> Any:
    return experiment({
        "kind": "student", "out": str(out), "seed": 2,
        "data": {"train": str(shapes / train), "val": str(shapes / "val.json"), "flip": False},
        "student": {
            "teachers": {"detection": {"name": "tiny_fasterrcnn", "checkpoint": str(teacher)}},
            "method": method, "split": {"inner_channels": 16, "widths": [0.5, 1.0]},
            "stage1": optim(8, batch_size=6, lr=0.005), "recalibrate_batches": 1, **extra,
        },
    })


@pytest.mark.parametrize("method", ["hnd", "ghnd", "entropic"])
def test_student_stage1_loss_drops(shapes: Path, det_teacher: Path, tmp_path: Path,
                                   method: str) -> None:
    # HND/GHND need no labels: they train on a bare folder of frames.
    train = "val.json" if method == "entropic" else "val"
    trainer = StudentTrainer(_student(shapes, det_teacher, tmp_path, method, train), tmp_path)
    assert len(trainer.layers["detection"]) == (1 if method == "hnd" else 4)
    result = trainer.stage1()
    assert _dropped(result.history, "loss" if method == "entropic" else "distortion")


def test_background_weight_discounts_errors_away_from_objects(shapes: Path, det_teacher: Path,
                                                              tmp_path: Path) -> None:
    plain = StudentTrainer(_student(shapes, det_teacher, tmp_path / "a", "entropic"), tmp_path)
    weighted = StudentTrainer(_student(shapes, det_teacher, tmp_path / "b", "entropic",
                                       background_weight=0.1, object_margin=0.0), tmp_path)
    batch = weighted.train_batch(0, 4)
    assert plain.position_weights(batch) is None  # weight 1 everywhere: ghnd's plain MSE
    weights = weighted.position_weights(batch)
    assert weights is not None and weights.shape == (4, 1, *batch.images.shape[1:3])
    x0, y0, x1, y1 = (int(v) for v in batch.targets[0]["boxes"][0].tolist())
    assert weights[0, 0, (y0 + y1) // 2, (x0 + x1) // 2] == 1.0  # inside an object
    assert torch.isclose(weights.min(), torch.tensor(0.1))  # background somewhere

    # the same error costs less on background than on an object
    with torch.no_grad():
        latent = weighted.student.prior.quantize(weighted.student.head(batch.images)[0])
        found = weighted.student_features("detection", latent)
        name = weighted.layers["detection"][0]
        pooled = torch.nn.functional.adaptive_avg_pool2d(weights, found[name].shape[-2:])
        outcomes = {}
        for where, chosen in (("object", pooled > 0.9), ("background", pooled < 0.2)):
            shifted = {k: v.detach().clone() for k, v in found.items()}
            position = chosen[0, 0].nonzero()[0]
            shifted[name][0, :, position[0], position[1]] += 1.0
            outcomes[where] = float(weighted.distortion("detection", latent, shifted, weights))
            assert torch.isclose(  # weight 1 everywhere is the plain MSE
                weighted.distortion("detection", latent, shifted, torch.ones_like(weights)),
                weighted.distortion("detection", latent, shifted, None))
    assert outcomes["background"] < outcomes["object"]


def test_student_pipeline_exports_a_bundle_that_infers(shapes: Path, det_teacher: Path,
                                                       tmp_path: Path) -> None:
    bundle_dir = tmp_path / "bundle"
    # Everything the demo's recipe uses: a rate weight per width, a frame classifier learnt from
    # labels on the same latent (no teacher checkpoint), a smaller local detector of its own.
    config = _student(shapes, det_teacher, tmp_path / "run", "entropic",
                      stage2=optim(2, batch_size=3), prefilter=optim(2, batch_size=3),
                      rate_lambda=[0.5, 0.05], label_tails=optim(3, batch_size=3),
                      teachers={"detection": {"name": "tiny_fasterrcnn",
                                              "checkpoint": str(det_teacher)},
                                "classification": {"name": "tiny_resnet"}},
                      local={"detection": {"name": "small_fasterrcnn", "min_size": 72,
                                           "max_size": 96, "num_classes": len(CLASSES) + 1}})
    config = dataclasses.replace(config, export=Export(out=str(bundle_dir), name="tiny-shapes"))
    timings = run_student(config, tmp_path / "run")
    assert {"stage1", "stage2", "label_tails", "prefilter", "export"} <= set(timings)
    manifest = load_bundle(bundle_dir).manifest
    assert manifest.classes["detection"][1:] == CLASSES
    assert manifest.classes["classification"] == ("none", *CLASSES)
    assert manifest.name == "tiny-shapes"
    assert set(manifest.local_files) == {"detection"}  # no local classifier was trained
    branches = {b.id: b for b in manifest.branches}
    assert (branches["split-w050"].rate_lambda, branches["split-w100"].rate_lambda) == (0.5, 0.05)
    # the device's model is the small one: fewer multiply-adds than the edge's teachers
    assert 0 < branches["local"].device_macs < branches["jpeg-q90"].edge_macs  # type: ignore
    assert branches["split-w050"].device_macs < branches["split-w100"].device_macs  # type: ignore
    assert manifest.prefilter.target_recall == 0.9
    prefilter = json.loads((tmp_path / "run" / "prefilter.json").read_text())
    assert prefilter["recall"] >= 0.9 and manifest.prefilter.threshold == prefilter["threshold"]

    frame = np.asarray(load_frame(shapes))
    runner = HeadRunner.load(bundle_dir)
    runtime = TailRuntime.load(bundle_dir)
    for width in runner.widths:
        runner.set_width(width)
        output = runner.run(frame)
        assert output.payload is not None and output.payload.nbytes > 0
        geometry = output.head_input.geometry
        (result,) = runtime.run_latents([runner.codec.decode(output.payload)],
                                        [geometry.input_size], [geometry.original])
        assert all(0 <= d.box[0] <= d.box[2] <= SCENE.width for d in result.detections)
        # both answers from one latent
        assert result.classifications and result.classifications[0].label_id < len(CLASSES) + 1
    # a full frame: detection by the teacher, classification through the student's own head
    (whole,) = runtime.run_images([frame])
    assert whole.classifications and runtime.label_tasks == ("classification",)

    manifest_bytes = (bundle_dir / "manifest.json").read_bytes()
    report = run_report([bundle_dir], [shapes / "val.json", shapes / "train.json"],
                        tmp_path / "report", limit=2, qualities=(50,))
    assert (bundle_dir / "manifest.json").read_bytes() == manifest_bytes  # only when asked
    text = report.read_text()
    assert "| jpeg | jpeg q=50 |" in text and "| jpeg444 | jpeg 4:4:4 q=50 |" in text
    assert "Generalization" in text
    sets = json.loads((tmp_path / "report" / "report.json").read_text())["sets"]
    assert len(sets) == 2
    for entry in sets.values():
        assert {r["method"] for r in entry["rows"]} == {
            "split", "split+gate", "raw", "local", "jpeg", "jpeg444", "webp"}
        assert all(r["false_per_empty"] is not None for r in entry["rows"])
        # bytes as the device's stream sends them: after the first frame only what changed
        sent = [r for r in entry["rows"] if r["method"] in ("split", "jpeg")]
        assert all(0 < r["kb_per_frame"] < r["extra"]["kb_whole"] for r in sent)
        assert entry["summary"]["students"][0]["best_kb_at_map"] is None or (
            entry["summary"]["students"][0]["best_kb_at_map"] > 0)
    assert (tmp_path / "report" / "rate_accuracy.png").stat().st_size > 0
    assert list((tmp_path / "report").glob("detections_*.png"))
    run_report([bundle_dir], shapes / "val.json", tmp_path / "report", limit=2, qualities=(50,),
               write_manifest=True)
    filled = {b.id: b.accuracy for b in load_bundle(bundle_dir).manifest.branches}
    assert filled["split-w100"] is not None and filled["local"] is not None


def load_frame(shapes: Path) -> Any:
    from split_models.data.coco import CocoFrames

    return CocoFrames(shapes / "val.json")[1].image


def test_resume_continues_the_same_run(shapes: Path, det_teacher: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def trained(out: Path) -> dict[str, Any]:
        trainer = StudentTrainer(_student(shapes, det_teacher, out, "entropic",
                                          stage1=optim(4, batch_size=2)), out)
        trainer.stage1()
        return trainer.student.state_dict()  # type: ignore[no-any-return]

    straight = trained(tmp_path / "straight")
    with stopped_at(monkeypatch, 3):
        trained(tmp_path / "stopped")
    assert torch.load(tmp_path / "stopped" / "stage1.ckpt", weights_only=False)["step"] == 2
    resumed = trained(tmp_path / "stopped")
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key


def test_threshold_keeps_the_target_recall() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1, 0.05])
    positive = np.array([1, 1, 0, 1, 1, 0, 0, 0])
    chosen = choose_threshold(scores, positive, 0.75)
    assert chosen["threshold"] == 0.6 and chosen["recall"] == 0.75
    assert chosen["skip_share"] == 0.5


def test_region_loss_is_bce_or_focal_which_discounts_the_easy_cells() -> None:
    logits = torch.tensor([[[[-6.0, 6.0, 0.5, -0.5]]]])
    targets = torch.tensor([[[[0.0, 1.0, 0.0, 1.0]]]])  # two easy cells, two wrong-ish ones
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    assert torch.allclose(region_loss(logits, targets), bce.mean())
    per_cell = [float(region_loss(logits[..., i:i + 1], targets[..., i:i + 1], 2.0)) / float(
        bce[..., i]) for i in range(4)]
    assert per_cell[0] < 1e-4 and per_cell[1] < 1e-4  # confident and right: next to nothing
    assert 0.3 < per_cell[2] < 1 and 0.3 < per_cell[3] < 1  # unsure and wrong: most of it
    with pytest.raises(ConfigError, match="regions_focal"):
        _student(Path("x"), Path("t.pt"), Path("o"), "entropic", regions_focal=-1.0)


def test_region_stage_learns_where_objects_are_and_calibrates_each_width(
        shapes: Path, det_teacher: Path, tmp_path: Path) -> None:
    config = _student(shapes, det_teacher, tmp_path / "run", "entropic",
                      split={"inner_channels": 16, "widths": [0.5, 1.0], "region_channels": 8,
                             "roi_cell": 2},
                      regions=optim(12, batch_size=6, lr=0.01), regions_recall=[0.8, 0.95],
                      object_margin=0.0)
    config = dataclasses.replace(config, export=Export(out=str(tmp_path / "bundle"), name="r"))
    trainer = StudentTrainer(config, tmp_path / "run")
    batch = trainer.train_batch(0, 4)
    targets = trainer.region_targets(batch, (100, 100))  # padded past the image's own grid
    cell = 2 * trainer.student.latent_stride
    x0, y0, x1, y1 = (float(v) for v in batch.targets[0]["boxes"][0].tolist())
    assert targets[0, 0, int((y0 + y1) / 2 // cell), int((x0 + x1) / 2 // cell)] == 1.0
    assert targets[:, :, -1, -1].sum() == 0  # outside the frame: nothing
    empty = [k for k, t in enumerate(batch.targets) if len(t["boxes"]) == 0]
    assert all(targets[k].sum() == 0 for k in empty)

    result, thresholds = trainer.regions(config.student.regions)
    assert _dropped(result.history, "bce")
    assert set(thresholds) == {"0.5", "1.0"}
    assert thresholds["0.5"]["recall"] >= 0.8 and thresholds["1.0"]["recall"] >= 0.95
    assert all(0 < t["kept"] <= 1 for t in thresholds.values())
    # the tails then learn on the latent as the device codes it: off the regions, the medians
    cuts = {w: t["threshold"] for w, t in thresholds.items()}
    student = trainer.student
    medians = student.prior.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
    with torch.no_grad():
        latent = student.head(batch.images)[0]
        middle = float(torch.sigmoid(student.head.regions(latent)).median())  # half the cells
        latent_hat, kept = trainer.masked(latent, student.prior.quantize(latent), middle, medians)
    assert kept.shape == (4, 1, *latent.shape[2:]) and kept.any() and not kept.all()
    off = (~kept).expand_as(latent_hat)
    assert torch.equal(latent_hat[off], medians.expand_as(latent_hat)[off])
    assert torch.equal(latent_hat[~off], student.prior.quantize(latent)[~off])
    tuned = trainer.stage2(Optim(**optim(2, batch_size=3)), cuts)
    assert len(tuned.history) == 2 and (tmp_path / "run" / "regions_tails.ckpt").exists()
    root = trainer.export(None, thresholds)
    manifest = load_bundle(root).manifest
    assert manifest.regions is not None and manifest.regions.target_recall == 0.95
    assert [h.regions_recall for h in manifest.heads] == [0.8, 0.95]
    # the coder's region CDFs, refit per width on the positions its threshold keeps
    tables = FactorizedTables.load(root / manifest.entropy_file)
    assert sorted(tables.region_cdfs) == sorted(h.latent_channels for h in manifest.heads)
    assert not any(np.array_equal(rows, tables.quantized_cdf[: len(rows)])
                   for rows in tables.region_cdfs.values())
    assert [h.regions_threshold for h in manifest.heads] == [
        thresholds["0.5"]["threshold"], thresholds["1.0"]["threshold"]]
