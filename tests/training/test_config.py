"""Training experiment configs: validated like every splitedge config (unknown keys refused, one
ConfigError), with the split as the SplitConfig the exported tail is rebuilt from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")

from shared.errors import ConfigError
from split_models.split import SplitConfig
from split_models.training.config import as_dict, load_experiment

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    experiment = load_experiment(path)
    assert experiment.kind in ("teacher", "student")
    assert as_dict(experiment)["kind"] == experiment.kind


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


STUDENT = {
    "kind": "student",
    "out": "runs/x",
    "data": {"train": "train.json"},
    "student": {"teachers": {"detection": {"name": "tiny_fasterrcnn"}},
                "split": {"latent_channels": 6, "widths": [0.5, 1.0]}},
}


def test_the_split_is_the_split_config_and_overrides_apply(tmp_path: Path) -> None:
    path = _write(tmp_path, STUDENT)
    overrides = ["student.rate_lambda=0.04", "student.split.inner_channels=8"]
    experiment = load_experiment(path, overrides)
    assert experiment.student is not None
    split = experiment.student.split
    assert isinstance(split, SplitConfig)
    assert split == SplitConfig(latent_channels=6, widths=(0.5, 1.0), inner_channels=8)
    assert experiment.student.rate_lambda == 0.04
    again = dataclasses.replace(experiment, seed=3)  # still dataclasses
    assert again.seed == 3 and again.student == experiment.student


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"student": {**STUDENT["student"], "splt": {}}}, "splt"),
        ({"student": {**STUDENT["student"], "split": {"latent_chanels": 4}}}, "latent_chanels"),
        ({"threads": "many"}, "threads"),
        ({"kind": "teacher"}, "teacher"),
        ({"data": None}, "data"),
        ({"student": {**STUDENT["student"], "rate_lambda": [1.0, 2.0, 3.0]}}, "rate_lambda"),
        ({"data": {"train": "t.json", "colour_ops": 9}}, "colour_ops"),
        ({"student": {**STUDENT["student"], "background_weight": 1.5}}, "background_weight"),
        ({"student": {**STUDENT["student"], "object_margin": -0.1}}, "object_margin"),
        ({"student": {**STUDENT["student"], "regions_recall": 0.0}}, "regions_recall"),
        ({"student": {**STUDENT["student"], "regions_recall": [0.9, 0.9, 0.9]}},
         "regions_recall"),
        ({"student": {**STUDENT["student"], "regions_recall": [0.9, 1.5]}}, "regions_recall"),
        ({"student": {**STUDENT["student"], "regions": {"steps": 2}}}, "region_channels"),
    ],
)
def test_every_bad_key_is_one_config_error_naming_it(
    tmp_path: Path, change: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_experiment(_write(tmp_path, {**STUDENT, **change}))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_experiment(_write(tmp_path, STUDENT), ["student.rate_lambda"])


def test_a_rate_weight_per_width(tmp_path: Path) -> None:
    path = _write(tmp_path, STUDENT)
    student = load_experiment(path, ["student.rate_lambda=[8.0, 2.0]"]).student
    assert student is not None
    assert (student.lambda_at(0.5), student.lambda_at(1.0)) == (8.0, 2.0)
    one = load_experiment(path, ["student.rate_lambda=3.0"]).student
    assert one is not None and one.lambda_at(0.5) == one.lambda_at(1.0) == 3.0


def test_a_regions_recall_per_width(tmp_path: Path) -> None:
    path = _write(tmp_path, STUDENT)
    student = load_experiment(path, ["student.regions_recall=[0.9, 0.97]"]).student
    assert student is not None
    assert (student.regions_recall_at(0.5), student.regions_recall_at(1.0)) == (0.9, 0.97)
    one = load_experiment(path, ["student.regions_recall=0.95"]).student
    assert one is not None and one.regions_recall_at(0.5) == one.regions_recall_at(1.0) == 0.95


def test_a_rate_target_per_width_or_none(tmp_path: Path) -> None:
    path = _write(tmp_path, STUDENT)
    student = load_experiment(path, ["student.rate_target=[100.0, 300.0]"]).student
    assert student is not None
    assert (student.rate_target_at(0.5), student.rate_target_at(1.0)) == (100.0, 300.0)
    plain = load_experiment(path).student
    assert plain is not None and plain.rate_target_at(1.0) is None  # a fixed λ
    # one value is every width's; two are one each; a rate of 0 cannot be reached
    for bad in ("[100.0, 0.0]", "[1.0, 2.0, 3.0]", "-5.0"):
        with pytest.raises(ConfigError, match="rate_target"):
            load_experiment(path, [f"student.rate_target={bad}"])
    with pytest.raises(ConfigError, match="entropic"):
        load_experiment(path, ["student.rate_target=100.0", "student.method=ghnd"])
