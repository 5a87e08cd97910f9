"""The model bundle's `manifest.json`: its schema, as pydantic models.

The manifest is the contract between training (which writes it), the edge (which serves the tails)
and the device (which runs the heads). It says how to preprocess a frame, which files make up the
bundle (with their sha256), and which branches exist with their measured figures.

Must not import torch: the device reads this. Branch figures are written by profiling and
evaluation commands, never typed by hand; `None` means "not measured yet".
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

Task = Literal["detection", "classification"]
BranchKind = Literal["split", "jpeg", "webp", "local", "skip"]


class _Strict(BaseModel):
    # Unknown keys are refused: a typo in a manifest must not pass silently.
    model_config = ConfigDict(extra="forbid", frozen=True)


class MinMaxSideResize(_Strict):
    """torchvision's detection rule: scale so the shorter side reaches `min_size` unless the longer
    side would pass `max_size`; then pad bottom/right to a multiple of `size_divisible`."""

    kind: Literal["min_max_side"] = "min_max_side"
    min_size: int = Field(gt=0)
    max_size: int = Field(gt=0)
    size_divisible: int = Field(gt=0)


class CenterCropResize(_Strict):
    """The ImageNet rule: scale the shorter side to `resize`, then cut the central `crop` square."""

    kind: Literal["resize_center_crop"] = "resize_center_crop"
    resize: int = Field(gt=0)
    crop: int = Field(gt=0)


class FixedResize(_Strict):
    """SSD's rule: stretch every frame to `height` × `width`, whatever its aspect (no padding).
    Boxes map back with one scale per axis."""

    kind: Literal["fixed"] = "fixed"
    height: int = Field(gt=0)
    width: int = Field(gt=0)


ResizeRule = Annotated[MinMaxSideResize | CenterCropResize | FixedResize,
                       Field(discriminator="kind")]


class Preprocessing(_Strict):
    """What the device does before the head: the head's input is uint8 NHWC in `colour_order`;
    `mean`/`std` (on 0..1 values, RGB) are applied inside the head graph, not on the device."""

    resize: ResizeRule
    interpolation: Literal["bilinear"] = "bilinear"
    colour_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NHWC"] = "NHWC"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # uint8 fill of the padding: the mean, so padded pixels normalize to ~0 as torchvision's do.
    pad_value: tuple[int, int, int] = (0, 0, 0)


class HeadFile(_Strict):
    width: float = Field(gt=0, le=1)
    latent_channels: int = Field(gt=0)
    file: str
    regions_threshold: float | None = Field(default=None, ge=0, le=1)  # with manifest.regions
    # the share of the objects' cells on validation frames the threshold was chosen to keep
    # (each width may have its own; unset: manifest.regions.target_recall)
    regions_recall: float | None = Field(default=None, gt=0, le=1)


class LatentSpec(_Strict):
    channels: int = Field(gt=0)  # at width 1.0
    stride: int = Field(gt=0)  # input pixels per latent cell
    dtype: Literal["float32"] = "float32"


class RegionsSpec(_Strict):
    """Where the frame holds objects: each head's `regions` output, P(object) per cell of `cell` ×
    `cell` latent positions. The device codes only the cells at or above its head's
    `regions_threshold` (shared.codecs.Regions); the others reach the edge as the prior's
    medians."""

    cell: int = Field(ge=1, le=255)
    target_recall: float | None = None  # of the labelled objects' cells, on validation frames


class PrefilterSpec(_Strict):
    """P(frame holds an object of interest); below `threshold` nothing needs encoding or sending."""

    file: str  # stem + prefilter only, for gating before the encoder runs
    threshold: float = Field(ge=0, le=1)
    target_recall: float | None = None


class DerivedLabel(_Strict):
    """A task answered from another task's answer, with no model of its own: `largest_object`
    is the class of the largest `source` detection scoring ≥ `min_score`, or "none". The edge's
    tail does it after the detector; the device's fallback does the same after local.onnx."""

    rule: Literal["largest_object"]
    source: Literal["detection"] = "detection"
    min_score: float = Field(ge=0, le=1)


class Branch(_Strict):
    """One way to process a frame; the scheduler reads these figures."""

    id: str
    kind: BranchKind
    width: float | None = None
    latent_channels: int | None = None
    rate_lambda: float | None = None
    input_size: tuple[int, int] | None = None  # (height, width) the figures were measured at
    codec: str | None = None  # a shared.codecs.CodecId name
    quality: int | None = Field(default=None, ge=1, le=100)  # jpeg / webp: the encoder's quality
    expected_bytes: float | None = None  # mean wire bytes per frame
    bytes_p50: float | None = None
    bytes_p95: float | None = None
    device_ms: float | None = None  # median, preprocessing and coding included
    device_ms_p95: float | None = None
    edge_ms: float | None = None
    # multiply-adds per frame at `input_size`: what the branch costs each side, whatever its CPU
    device_macs: int | None = Field(default=None, ge=0)
    edge_macs: int | None = Field(default=None, ge=0)
    accuracy: float | None = None


def split_branch_id(width: float) -> str:
    """The id export gives a split branch: `split-w025` for width 0.25."""
    return f"split-w{round(width * 100):03d}"


class FileDigest(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Manifest(_Strict):
    schema_version: int
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str
    tasks: tuple[Task, ...]
    classes: dict[Task, tuple[str, ...]]
    preprocessing: Preprocessing
    latent: LatentSpec
    heads: tuple[HeadFile, ...]
    prefilter: PrefilterSpec
    regions: RegionsSpec | None = None  # None: every latent position is coded
    entropy_file: str
    tail_file: str
    local_files: dict[Task, str]
    derived: dict[Task, DerivedLabel] = Field(default_factory=dict)  # tasks read off another's
    branches: tuple[Branch, ...]
    files: dict[str, FileDigest]

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if not self.tasks:
            raise ValueError("a bundle serves at least one task")
        missing = [t for t in self.tasks if t not in self.classes]
        if missing:
            raise ValueError(f"tasks {missing} have no class list")
        if not self.heads:
            raise ValueError("a bundle has at least one head")
        widths = [h.width for h in self.heads]
        if len(set(widths)) != len(widths):
            raise ValueError(f"duplicate head widths {widths}")
        for head in self.heads:
            if head.latent_channels > self.latent.channels:
                raise ValueError(
                    f"head {head.file} has {head.latent_channels} channels, more than the "
                    f"latent's {self.latent.channels}"
                )
        for task, label in self.derived.items():
            if task not in self.tasks or label.source not in self.tasks or task == label.source:
                raise ValueError(f"derived task {task} from {label.source}: both must be tasks "
                                 f"of this bundle ({list(self.tasks)}), and not the same one")
        if self.regions is not None and any(h.regions_threshold is None for h in self.heads):
            raise ValueError("a bundle that codes regions gives every head a regions_threshold")
        referenced = [h.file for h in self.heads]
        referenced += [self.prefilter.file, self.entropy_file, self.tail_file]
        referenced += list(self.local_files.values())
        unlisted = sorted(set(referenced) - set(self.files))
        if unlisted:
            raise ValueError(f"files {unlisted} are referenced but have no sha256 in `files`")
        ids = [b.id for b in self.branches]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate branch ids {ids}")
        return self

    def head_for(self, width: float) -> HeadFile:
        for head in self.heads:
            if abs(head.width - width) < 1e-9:
                return head
        known = ", ".join(str(h.width) for h in self.heads)
        raise BundleError(f"no head of width {width}; this bundle has {known}")
