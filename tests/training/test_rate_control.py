"""Stage 1 steered to a rate: the controller's rule, the coder's rate it reads, and a real tiny
stage 1 whose λs move towards a target and resume with the run."""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

import split_models.training.student as student_module  # noqa: E402
from split_models.bottleneck import LatentPrior  # noqa: E402
from split_models.training.rate_control import RateControl  # noqa: E402
from split_models.training.student import StudentTrainer  # noqa: E402
from tests.training.conftest import experiment, optim, stopped_at  # noqa: E402


def test_lambda_rises_above_the_target_falls_below_and_each_step_is_clipped() -> None:
    control = RateControl((0.5, 1.0), [4.0, 1.0], [100.0, 200.0], start=2, every=2, gain=2.0,
                          max_step=1.25)
    for index in range(4):
        control.observe(0.5, 110.0)  # 10 % over: λ × 1.1² = 1.21 per update
        control.observe(1.0, 100.0)  # half: (0.5)² = 0.25, clipped to 1 / 1.25
        control.step(index)
    lambdas = control.lambdas.tolist()
    # updates after steps 3 only (index ≥ start and every 2nd): one update each
    rate_half = control.rates[0].item()
    assert 100.0 < rate_half < 110.0  # the smoothed rate, still on its way from the target
    assert lambdas[0] == pytest.approx(4.0 * (rate_half / 100.0) ** 2)
    assert lambdas[1] == pytest.approx(1.0 / 1.25)
    logged = control.logged()
    assert logged["lambda@0.5"] == pytest.approx(lambdas[0]) and "bytes@1" in logged


def test_no_update_before_start_or_between_updates() -> None:
    control = RateControl((1.0,), [2.0], [10.0], start=5, every=3)
    for index in range(5):
        control.observe(1.0, 1000.0)
        control.step(index)
    assert control.weight(1.0) == 2.0  # before start
    control.step(6)  # (6 + 1) % 3 != 0
    assert control.weight(1.0) == 2.0
    control.step(8)
    assert control.weight(1.0) == pytest.approx(2.0 * 1.25)


def test_its_state_is_the_checkpoints() -> None:
    control = RateControl((0.5, 1.0), [4.0, 1.0], [100.0, 200.0], start=0, every=1)
    control.observe(1.0, 400.0)
    control.step(0)
    again = RateControl((0.5, 1.0), [4.0, 1.0], [100.0, 200.0])
    again.load_state_dict(control.state_dict())
    assert torch.equal(again.lambdas, control.lambdas) and torch.equal(again.rates, control.rates)
    with pytest.raises(ValueError, match="widths"):
        RateControl((0.5, 1.0), [4.0], [100.0, 200.0])


def test_coded_bits_price_what_the_coder_writes() -> None:
    # The rate the controller steers on: the prior's density on the rounded latent. compressai's
    # own range coder, on the same rounding, writes within a few % of it (plus a flush).
    torch.manual_seed(0)
    prior = LatentPrior(8).eval()
    latent = torch.distributions.Laplace(0.0, 3.0).sample((2, 8, 16, 16))
    prior.entropy_bottleneck.update(force=True)
    bits = prior.coded_bits(latent)
    strings = prior.entropy_bottleneck.compress(latent)
    written = np.array([8 * len(s) for s in strings], dtype=float)
    assert bits.shape == (2,)
    np.testing.assert_allclose(bits.numpy(), written, rtol=0.05, atol=64)
    slim = prior.coded_bits(latent[:, :4])  # a slim latent prices its own channels only
    assert float(slim.sum()) < float(bits.sum())


def _steered(shapes: Path, teacher: Path, out: Path, target: float, steps: int = 4) -> Any:
    return experiment(_raw(shapes, teacher, out, target, steps))


def _raw(shapes: Path, teacher: Path, out: Path, target: float, steps: int) -> dict[str, Any]:
    return {
        "kind": "student", "out": str(out), "seed": 2,
        "data": {"train": str(shapes / "val.json"), "val": str(shapes / "val.json"),
                 "flip": False},
        "student": {
            "teachers": {"detection": {"name": "tiny_fasterrcnn", "checkpoint": str(teacher)}},
            "split": {"inner_channels": 16, "widths": [0.5, 1.0]}, "rate_lambda": 1.0,
            "rate_target": target, "stage1": optim(steps, batch_size=2, lr=0.005),
            "recalibrate_batches": 1,
        },
    }


@pytest.fixture
def every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # the recipe steers after 100 steps, every 25; a tiny run steers from its first
    monkeypatch.setattr(student_module, "RateControl",
                        functools.partial(RateControl, start=0, every=1))


@pytest.mark.usefixtures("every_step")
@pytest.mark.parametrize(("target", "direction"), [(1.0, 1), (1e6, -1)])
def test_stage1_steers_lambda_towards_the_target(shapes: Path, det_teacher: Path,
                                                 tmp_path: Path, target: float,
                                                 direction: int) -> None:
    # 1 byte per frame is below any rate a latent of these frames reaches: λ can only rise;
    # a megabyte is above: λ can only fall
    trainer = StudentTrainer(_steered(shapes, det_teacher, tmp_path, target), tmp_path)
    history = trainer.stage1().history
    trained = [h["lambda@1"] for h in history]
    assert trained[0] == 1.0  # the first step trains at rate_lambda
    assert all(direction * (b - a) > 0 for a, b in itertools.pairwise(trained))
    rates = [h["bytes@1"] for h in history]
    assert all(math.isfinite(r) and r > 0 for r in rates)
    saved = torch.load(tmp_path / "stage1.ckpt", weights_only=False)
    final = saved["modules"]["rate"]["lambdas"].tolist()
    assert final[1] == pytest.approx(trained[-1] * (1.25 if direction > 0 else 0.8))


@pytest.mark.usefixtures("every_step")
def test_a_steered_run_resumes_with_its_lambdas(shapes: Path, det_teacher: Path,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def history(out: Path) -> list[float]:
        trainer = StudentTrainer(_steered(shapes, det_teacher, out, 1.0), out)
        return [h["lambda@1"] for h in trainer.stage1().history]

    straight = history(tmp_path / "straight")
    with stopped_at(monkeypatch, 3):
        history(tmp_path / "stopped")
    # the resumed steps train at the λs the stopped run had reached, not at rate_lambda again
    resumed = history(tmp_path / "stopped")
    assert resumed == pytest.approx(straight) and straight[-1] > straight[0]


@pytest.mark.usefixtures("every_step")
def test_stage1_rate_benchmark_prices_a_checkpoint(shapes: Path, det_teacher: Path,
                                                   tmp_path: Path) -> None:
    from benchmarks.stage1_rate import measure

    raw = _raw(shapes, det_teacher, tmp_path, 1.0, 4)
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump(raw))
    history = StudentTrainer(experiment(raw), tmp_path).stage1().history
    rows = measure(config, tmp_path / "stage1.ckpt", [], batches=2, batch_size=2)
    assert [r["width"] for r in rows] == [0.5, 1.0]
    assert rows[1]["lambda"] == pytest.approx(history[-1]["lambda@1"])
    assert all(r["step"] == 4 and math.isfinite(r["bytes_per_frame"]) and r["bytes_per_frame"] > 0
               for r in rows)
