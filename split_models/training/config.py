"""Experiment configs: one YAML file per experiment, read into frozen dataclasses.

Unknown keys are errors (a typo must not silently fall back to a default). `--set a.b=value` on
the command line overrides a key with a YAML-parsed value, e.g. `--set student.rate_lambda=0.04`.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Optim:
    steps: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = 0.0
    warmup_steps: int = 0
    checkpoint_every: int = 50
    log_every: int = 10


@dataclass(frozen=True)
class TeacherRef:
    """A teacher by registry name; `checkpoint` from `splitedge train` (kind teacher) or a
    torchvision weights name. Detectors take `min_size`/`max_size` (their resize rule)."""

    name: str
    checkpoint: str | None = None
    num_classes: int | None = None
    min_size: int | None = None
    max_size: int | None = None


@dataclass(frozen=True)
class Data:
    train: str  # a COCO .json or a folder of frames
    val: str | None = None
    flip: bool = True
    # colour jitter, channel swaps and greyscale on top of what the generator varies (a camera
    # the generator did not imagine still has a gain, a white balance and a colour order)
    photometric: bool = True


@dataclass(frozen=True)
class DetectorSampling:
    """Two-stage detectors' training-time sampling. torchvision's defaults (2000 proposals, 512
    RoIs per image) are sized for COCO's crowds; a few objects per frame need far fewer, and
    the step is ~2.4x faster on a CPU with these."""

    rpn_pre_nms: int = 600
    rpn_post_nms: int = 300
    roi_samples: int = 128


@dataclass(frozen=True)
class TeacherTraining:
    teacher: TeacherRef
    optim: Optim = field(default_factory=Optim)
    sampling: DetectorSampling = field(default_factory=DetectorSampling)


@dataclass(frozen=True)
class Split:
    latent_channels: int = 12
    widths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    encoder_stride: int = 2
    inner_channels: int = 64
    prefilter_channels: int = 16


@dataclass(frozen=True)
class StudentTraining:
    teachers: dict[str, TeacherRef]  # task -> teacher; the first gives the head
    method: Literal["hnd", "ghnd", "entropic"] = "entropic"
    split: Split = field(default_factory=Split)
    rate_lambda: float = 0.01  # entropic: weight of bits per pixel
    aux_lr: float = 0.01  # the prior's quantiles (compressai's aux loss), own optimizer
    # The prior's density learns at lr × this: from scratch it lags the encoder, and while it
    # is wide the rate term cannot be lowered by the encoder at all.
    prior_lr_scale: float = 10.0
    ghnd_layers: tuple[str, ...] = ("layer2", "layer3", "layer4")  # after the split child
    slimmable: bool = True  # sandwich rule over split.widths; else the largest width only
    random_widths: int = 1  # sandwich: random middle widths per step
    stage1: Optim = field(default_factory=Optim)
    stage2: Optim | None = None  # encoder + prior frozen; tail fine-tuned on the coded latent
    task_loss: bool = True  # stage 2: add the tails' own losses when the data has labels
    sampling: DetectorSampling = field(default_factory=DetectorSampling)
    recalibrate_batches: int = 20  # BN statistics per width after training
    prefilter: Optim | None = None
    target_recall: float = 0.9
    prefilter_score: float = 0.5  # unlabeled frames: positive if the teacher finds a box above


@dataclass(frozen=True)
class Export:
    out: str
    name: str
    version: str = "1"


@dataclass(frozen=True)
class Experiment:
    kind: Literal["teacher", "student"]
    out: str  # run directory: checkpoints, logs, results
    data: Data
    seed: int = 0
    threads: int = 2
    teacher: TeacherTraining | None = None
    student: StudentTraining | None = None
    export: Export | None = None

    def __post_init__(self) -> None:
        if self.kind == "teacher" and self.teacher is None:
            raise ConfigError("kind: teacher needs a `teacher:` section")
        if self.kind == "student" and self.student is None:
            raise ConfigError("kind: student needs a `student:` section")


def load_experiment(path: Path | str, overrides: list[str] | None = None) -> Experiment:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. student.rate_lambda=0.04")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return build(Experiment, raw, str(path))


def build(cls: Any, raw: Any, where: str) -> Any:
    """`raw` (parsed YAML) as dataclass `cls`, recursively; unknown keys are errors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {raw!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {unknown} for {cls.__name__}; known {sorted(names)}"
        )
    values = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in raw.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        return None if value is None else _convert(options[0], value, where)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin is tuple:
        return tuple(value)
    if origin is dict:
        _, value_type = get_args(hint)
        return {k: _convert(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int):
        return float(value)
    return value


def as_dict(experiment: Experiment) -> dict[str, Any]:
    return dataclasses.asdict(experiment)
