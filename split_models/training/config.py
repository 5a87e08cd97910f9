"""Experiment configs: one YAML file per experiment, validated into frozen pydantic dataclasses.

Unknown keys are errors (a typo must not silently fall back to a default), as in the device's and
the edge's settings; every problem is a `shared.errors.ConfigError` naming its key. The split is
`split_models.split.SplitConfig` itself, the one the exported tail is rebuilt from.
`--set a.b=value` on the command line overrides a key with a YAML-parsed value, e.g.
`--set student.rate_lambda=0.04`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from shared.errors import ConfigError
from split_models.split import SplitConfig

__all__ = [
    "ConfigError",
    "Data",
    "DetectorSampling",
    "Experiment",
    "Export",
    "Optim",
    "StudentTraining",
    "TeacherRef",
    "TeacherTraining",
    "as_dict",
    "load_experiment",
]

# Unknown keys refused; still dataclasses (dataclasses.replace / asdict work on them).
_STRICT = ConfigDict(extra="forbid")


@dataclass(frozen=True, config=_STRICT)
class Optim:
    steps: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = 0.0
    warmup_steps: int = 0
    checkpoint_every: int = 50
    log_every: int = 10


@dataclass(frozen=True, config=_STRICT)
class TeacherRef:
    """A teacher by registry name; `checkpoint` from `splitedge train` (kind teacher) or a
    torchvision weights name. Detectors take `min_size`/`max_size` (their resize rule)."""

    name: str
    checkpoint: str | None = None
    num_classes: int | None = None
    min_size: int | None = None
    max_size: int | None = None


@dataclass(frozen=True, config=_STRICT)
class Data:
    train: str  # a COCO .json or a folder of frames
    val: str | None = None
    flip: bool = True
    # colour jitter, channel swaps and greyscale on top of what the generator varies (a camera
    # the generator did not imagine still has a gain, a white balance and a colour order)
    photometric: bool = True
    # then, on half the frames, this many of RandAugment's colour operations (hue, posterize,
    # solarize, blur, sharpness, gamma, invert, equalize, autocontrast); 0: none
    colour_ops: int = Field(default=0, ge=0, le=4)
    # style randomization (split_models/training/style_randomization.py), each the probability a
    # frame gets it: a random convolution re-textures it (RandConv); another frame's Fourier
    # amplitude recolours it under its own structure (FACT's amplitude mix)
    random_convolution: float = Field(default=0.0, ge=0.0, le=1.0)
    amplitude_mix: float = Field(default=0.0, ge=0.0, le=1.0)


@dataclass(frozen=True, config=_STRICT)
class DetectorSampling:
    """Two-stage detectors' training-time sampling. torchvision's defaults (2000 proposals, 512
    RoIs per image) are sized for COCO's crowds; a few objects per frame need far fewer, and
    the step is ~2.4x faster on a CPU with these."""

    rpn_pre_nms: int = 600
    rpn_post_nms: int = 300
    roi_samples: int = 128


@dataclass(frozen=True, config=_STRICT)
class TeacherTraining:
    teacher: TeacherRef
    optim: Optim = field(default_factory=Optim)
    sampling: DetectorSampling = field(default_factory=DetectorSampling)
    # MixStyle (style_randomization.MixStyle) after the backbone's first two stages: the
    # probability each stage mixes a batch; 0: off
    mixstyle: float = Field(default=0.0, ge=0.0, le=1.0)
    # the saved teacher is an exponential moving average of the trained weights (and BatchNorm
    # statistics) with this decay per step: a flatter optimum than the last SGD iterate, which
    # the literature finds transfers better across styles (not here: 0.999 lowered both test
    # sets over two seeds, style_shift.md); 0: the last iterate
    ema: float = Field(default=0.0, ge=0.0, lt=1.0)


@dataclass(frozen=True, config=_STRICT)
class StudentTraining:
    teachers: dict[str, TeacherRef]  # task -> teacher; the first gives the head
    method: Literal["hnd", "ghnd", "entropic"] = "entropic"
    split: SplitConfig = field(default_factory=SplitConfig)
    # entropic: weight of bits per pixel. One value per width (smallest width first) makes each
    # width its own rate point: a narrow width pays more per bit, so it sends fewer bytes and the
    # widths become the scheduler's bandwidth knob.
    rate_lambda: float | tuple[float, ...] = 0.01
    # A rate to reach instead of a fixed weight (entropic only): per width (smallest first),
    # bytes per frame as the entropy model prices the rounded latent on training batches. Stage
    # 1 then steers each width's λ towards it (split_models.training.rate_control), starting
    # from rate_lambda. A fixed λ buys whatever rate the teacher's features make optimal: the
    # shipped bundle and a fresh run of its recipe send 0.38 and 0.52 KB at width 1.0. Off in
    # the demo recipe: its rates reproduce, but the bundle was not better (rate.md).
    rate_target: float | tuple[float, ...] | None = None
    aux_lr: float = 0.01  # the prior's quantiles (compressai's aux loss), own optimizer
    # The prior's density learns at lr × this: from scratch it lags the encoder, and while it
    # is wide the rate term cannot be lowered by the encoder at all.
    prior_lr_scale: float = 10.0
    ghnd_layers: tuple[str, ...] = ("layer2", "layer3", "layer4")  # after the split child
    # The distortion's weight at feature positions away from every object (labelled data): 1 is
    # ghnd's plain MSE everywhere. Below 1 the encoder may code background coarsely, which the
    # tails need only to tell it is background, and spend its bits on the objects; positions
    # within an object's box grown by `object_margin` of its size (at least 8 px) weigh 1.
    background_weight: float = 1.0
    object_margin: float = 0.25
    # stage 1: what the tails see of the latent. "noise": the prior's additive uniform noise
    # (compressai's default); "mixed": the rounded latent, straight-through, while the rate still
    # reads the noisy one — the wire rounds, so a latent trained on noise loses accuracy there.
    rounding: Literal["noise", "mixed"] = "noise"
    slimmable: bool = True  # sandwich rule over split.widths; else the largest width only
    random_widths: int = 1  # sandwich: random middle widths per step
    stage1: Optim = field(default_factory=Optim)
    stage2: Optim | None = None  # encoder + prior frozen; tail fine-tuned on the coded latent
    task_loss: bool = True  # stage 2: add the tails' own losses when the data has labels
    sampling: DetectorSampling = field(default_factory=DetectorSampling)
    recalibrate_batches: int = 20  # BN statistics per width after training
    # Tails whose teacher has no checkpoint (an untrained architecture, e.g. a frame classifier)
    # learn from the labels alone: frozen head, coded latent of every width, the task's loss.
    label_tails: Optim | None = None
    prefilter: Optim | None = None
    target_recall: float = 0.9
    prefilter_score: float = 0.5  # unlabeled frames: positive if the teacher finds a box above
    # Regions of interest (split_models.regions, needs split.region_channels): a head on the
    # latent learns where objects are (a target per region cell: an object's box grown by
    # `region_margin` overlaps it), and the device codes only the cells scoring above the
    # threshold that keeps `regions_recall` of the objects' cells on validation frames.
    # None: no region stage, every latent position is coded. One recall per width (smallest
    # first) gives each width its own: the narrow widths are the scheduler's bandwidth knob, and
    # at 0.93 instead of 0.97 they keep ~0.40 of the cells instead of ~0.50 (a fifth fewer bytes
    # for ≤ 0.3 points, bundle v8), where width 1.0, the accuracy end, would lose 0.7.
    regions: Optim | None = None
    regions_recall: float | tuple[float, ...] = 0.97
    # the cells a region head must find: those an object's box, grown by this share of its size,
    # overlaps. 0, the boxes themselves: with the labelled boxes as the mask (bundle v5, 32 px
    # cells) that keeps 22 % of the cells and the tails gain 2.3 points, where a quarter's margin
    # (at least 8 px) keeps 33 % and gains 0.7: the tails need no background around an object.
    region_margin: float = 0.0
    # the region head's loss: binary cross-entropy, focal (Lin et al., 2017) with this γ when
    # > 0 — each cell's term scaled by (1 − p_true)^γ, so the many easy background cells stop
    # drowning the hard ones (busy backgrounds, an object's edge cells) that set the threshold
    regions_focal: float = Field(default=0.0, ge=0.0, le=5.0)
    # then the tails learn on the latent as the device codes it (stage 2's loss, the cells off
    # the regions at the medians): they stop reading the missing background as objects
    regions_tails: Optim | None = None
    # and the entropy coder's tables refit, per width, on the positions the region head keeps on
    # this many training frames (shared.codecs.factorized, "region tables"): the prior was
    # learnt on every position, mostly background, and the kept ones spread wider (bundle v9:
    # width 1.0's payload −19 %, the same symbols). 0: the prior's tables everywhere.
    regions_table_frames: int = 500
    # The device's own models (local*.onnx) per task, trained apart (kind: teacher) and smaller
    # than the edge's; empty: each teacher itself. Tasks left out get no local model.
    local: dict[str, TeacherRef] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.background_weight <= 1.0:
            raise ConfigError(
                f"student.background_weight: {self.background_weight}, expected 0 … 1")
        if self.object_margin < 0:
            raise ConfigError(f"student.object_margin: {self.object_margin}, expected ≥ 0")
        if self.region_margin < 0:
            raise ConfigError(f"student.region_margin: {self.region_margin}, expected ≥ 0")
        recalls = (self.regions_recall if isinstance(self.regions_recall, tuple)
                   else (self.regions_recall,))
        if not all(0.0 < r <= 1.0 for r in recalls):
            raise ConfigError(f"student.regions_recall: {self.regions_recall}, expected 0 < r ≤ 1")
        if len(recalls) not in (1, len(self.split.widths)):
            raise ConfigError(f"student.regions_recall: {len(recalls)} values for "
                              f"{len(self.split.widths)} widths {self.split.widths}")
        if self.regions_tails is not None and self.regions is None:
            raise ConfigError("student.regions_tails trains on the regions: set student.regions")
        if self.regions is not None and not self.split.region_channels:
            raise ConfigError("student.regions trains a region head: set split.region_channels")
        if self.rate_target is not None:
            targets = (self.rate_target if isinstance(self.rate_target, tuple)
                       else (self.rate_target,))
            if len(targets) not in (1, len(self.split.widths)) or min(targets) <= 0:
                raise ConfigError(f"student.rate_target: {self.rate_target}, expected one "
                                  f"positive value or one per width {self.split.widths}")
            if self.method != "entropic":
                raise ConfigError("student.rate_target steers the rate weight: method entropic")
        if isinstance(self.rate_lambda, tuple) and len(self.rate_lambda) != len(
            self.split.widths
        ):
            raise ConfigError(
                f"student.rate_lambda: {len(self.rate_lambda)} values for "
                f"{len(self.split.widths)} widths {self.split.widths}"
            )

    def _at(self, value: float | tuple[float, ...], width: float) -> float:
        """`width`'s entry of an option given once for every width or once per width."""
        return value[self.split.widths.index(width)] if isinstance(value, tuple) else value

    def rate_target_at(self, width: float) -> float | None:
        """The bytes per frame `width`'s stage-1 rate is steered to, or None (a fixed λ)."""
        return None if self.rate_target is None else self._at(self.rate_target, width)

    def lambda_at(self, width: float) -> float:
        """The rate weight of `width`."""
        return self._at(self.rate_lambda, width)

    def regions_recall_at(self, width: float) -> float:
        """The share of the objects' cells `width`'s regions threshold keeps on validation."""
        return self._at(self.regions_recall, width)


@dataclass(frozen=True, config=_STRICT)
class Export:
    out: str
    name: str
    version: str = "1"


@dataclass(frozen=True, config=_STRICT)
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
    experiment: Experiment = build(Experiment, raw, str(path))
    return experiment


def build(cls: Any, raw: Any, where: str) -> Any:
    """`raw` (parsed YAML) as config class `cls`; every problem one ConfigError naming its keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {raw!r}")
    try:
        return TypeAdapter(cls).validate_python(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or cls.__name__}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None


def as_dict(experiment: Experiment) -> dict[str, Any]:
    return dataclasses.asdict(experiment)
