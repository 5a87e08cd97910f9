"""Export a student (and its teachers) to a model bundle directory.

    export_bundle(student, teachers, "bundles/demo-shapes", name="demo-shapes", version="1")

writes one head ONNX per width (uint8 NHWC in; latent and prefilter score out), `prefilter.onnx`
(stem + prefilter, for gating), `entropy.npz` (the prior's tables, shared by every width as a
channel prefix), `tail.pt` (spec + weights to rebuild the tails and the teachers), the device's
own models as `local*.onnx` (small models trained apart, or the teachers themselves), and
`manifest.json` with every file's sha256. Branch figures are measured here on a sample frame on
*this* machine (device_ms, edge_ms, expected_bytes, multiply-adds each side); a profiling run on
the device overwrites them; accuracy stays None until an evaluation command fills it.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from device_client.head import HeadRunner, Prepared
from device_client.local import LocalRunner
from device_client.preprocess import Preprocessor
from shared.bundle import (
    Branch,
    CenterCropResize,
    DerivedLabel,
    FixedResize,
    HeadFile,
    LatentSpec,
    Manifest,
    MinMaxSideResize,
    PrefilterSpec,
    Preprocessing,
    RegionsSpec,
    Task,
    load_bundle,
    write_manifest,
)
from shared.bundle.manifest import SCHEMA_VERSION, FileDigest, split_branch_id
from shared.codecs import Codec, CodecId, FactorizedTables, make_codec
from shared.errors import TeacherError
from split_models.entropy import export_tables
from split_models.runtime import TAIL_FORMAT
from split_models.split import SplitModel
from split_models.tails import LargestObject, run_tails
from split_models.teachers import categories, teacher_spec

OPSET = 17
_PLACEHOLDER = FileDigest(sha256="0" * 64, bytes=0)  # write_manifest computes the real ones

IMAGE_QUALITIES = (30, 50, 70, 90)  # the image branches a bundle offers, low to high


def head_file(width: float) -> str:
    return f"head_w{round(width * 100):03d}.onnx"


def export_bundle(
    student: SplitModel,
    teachers: dict[str, tuple[str, nn.Module]],
    out_dir: Path | str,
    *,
    name: str,
    version: str = "0",
    prefilter_threshold: float = 0.0,
    regions_thresholds: dict[float, float] | None = None,
    sample: npt.NDArray[np.uint8] | None = None,
    repeats: int = 5,
    local: dict[str, tuple[str, nn.Module]] | None = None,
    label_tasks: tuple[str, ...] = (),
    region_symbols: Callable[[FactorizedTables], dict[int, npt.NDArray[np.int32]]] | None = None,
) -> Path:
    """Write the bundle and return its directory. `sample` (HxWx3 uint8 RGB) is the frame the
    branch figures are measured on (default: a mid-grey 480x640 frame). `regions_thresholds`:
    per width, the device codes only the region cells scoring at least this (None: every
    position; the student needs a region head).
    `local`: the device's own models per task (default: the teachers themselves).
    `label_tasks`: tasks whose tail learnt from labels, with no trained teacher: the edge answers
    their full frames through the head. `region_symbols`: given the prior's tables, the symbols
    the regions keep per channel count, to refit the region CDFs on (shared.codecs.factorized);
    None: payloads with regions are coded with the prior's tables."""
    if regions_thresholds and student.head.regions is None:
        raise ValueError("regions thresholds need a student with a region head")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    student = student.eval()
    student.prior.entropy_bottleneck.update(force=True)
    first_name, first_teacher = next(iter(teachers.values()))
    preprocessing = preprocessing_for(first_name, first_teacher, student)
    sample = sample if sample is not None else np.full((480, 640, 3), 128, dtype=np.uint8)
    example = _example_input(sample, preprocessing)

    files = _export_heads(student, example, out)
    _export_onnx(_Gate(student), (example,), out / "prefilter.onnx", ["image"], ["prefilter_score"])
    files.append("prefilter.onnx")
    tables = export_tables(student.prior.entropy_bottleneck)
    if region_symbols is not None:
        tables = tables.with_region_cdfs(region_symbols(tables))
    tables.save(out / "entropy.npz")
    save_tail(student, teachers, out / "tail.pt", label_tasks)
    # (a task read off the detector's answer, largest_object, is no model of its own to ship)
    local_models = local if local is not None else {
        task: entry for task, entry in teachers.items() if not isinstance(entry[1], LargestObject)}
    for task, (local_name, model) in local_models.items():
        teacher_name, teacher = teachers[task]
        if _num_classes(local_name, model) != _num_classes(teacher_name, teacher):
            raise TeacherError(f"the local {task} model {local_name} has "
                               f"{_num_classes(local_name, model)} classes, its teacher "
                               f"{_num_classes(teacher_name, teacher)}")
    local_files = export_local(local_models, sample, example, out)
    files += ["entropy.npz", "tail.pt", *local_files.values()]

    config = student.config
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=name,
        version=version,
        tasks=cast("tuple[Task, ...]", tuple(teachers)),
        classes={
            cast("Task", task): categories(n, _num_classes(n, t))
            for task, (n, t) in teachers.items()
        },
        preprocessing=preprocessing,
        latent=LatentSpec(
            channels=config.latent_channels,
            stride=student.latent_stride,
        ),
        heads=tuple(
            HeadFile(width=w, latent_channels=c, file=head_file(w),
                     regions_threshold=(regions_thresholds or {}).get(w))
            for w, c in zip(config.widths, student.head.encoder.latent_widths, strict=True)
        ),
        prefilter=PrefilterSpec(file="prefilter.onnx", threshold=prefilter_threshold),
        regions=RegionsSpec(cell=config.roi_cell) if regions_thresholds else None,
        entropy_file="entropy.npz",
        tail_file="tail.pt",
        local_files=cast("dict[Task, str]", local_files),
        # the device's fallback reads these tasks off local.onnx's detections, as the tail does
        derived={cast("Task", task): DerivedLabel(rule="largest_object",
                                                  min_score=teacher.min_score)
                 for task, (_, teacher) in teachers.items()
                 if isinstance(teacher, LargestObject)},
        branches=(),
        files={f: _PLACEHOLDER for f in files},
    )
    write_manifest(out, manifest)
    branches = measure_branches(student, out, sample, repeats, teachers, local_models,
                                label_tasks)
    write_manifest(out, manifest.model_copy(update={"branches": branches}))
    return out


def preprocessing_for(name: str, teacher: nn.Module, student: SplitModel) -> Preprocessing:
    """The manifest's preprocessing: a detector's own transform rule, or ImageNet resize/crop."""
    mean = tuple(float(v) for v in student.head.mean.flatten())
    std = tuple(float(v) for v in student.head.std.flatten())
    pad = tuple(round(m * 255) for m in mean)
    transform = getattr(teacher, "transform", None)
    resize: MinMaxSideResize | CenterCropResize | FixedResize
    if teacher_spec(name).task == "detection" and transform is not None and (
        transform.fixed_size is not None
    ):
        # torchvision's fixed_size is (width, height): it resizes to [fixed[1], fixed[0]]
        width, height = (int(v) for v in transform.fixed_size)
        resize = FixedResize(height=height, width=width)
    elif teacher_spec(name).task == "detection" and transform is not None:
        resize = MinMaxSideResize(
            min_size=int(transform.min_size[-1]),
            max_size=int(transform.max_size),
            size_divisible=math.lcm(int(transform.size_divisible), student.latent_stride),
        )
    else:
        spec = teacher_spec(name)
        resize = CenterCropResize(resize=spec.resize, crop=spec.crop)
    return Preprocessing(resize=resize, mean=mean, std=std, pad_value=pad)  # type: ignore[arg-type]


def save_tail(
    student: SplitModel,
    teachers: dict[str, tuple[str, nn.Module]],
    path: Path,
    label_tasks: tuple[str, ...] = (),
) -> None:
    """Spec + weights: `runtime.TailRuntime` rebuilds teachers by name, then the student."""
    torch.save(
        {
            "format": TAIL_FORMAT,
            "config": student.config.to_dict(),
            "teachers": {
                task: {"name": n, "num_classes": _num_classes(n, t), **_detector_size(t)}
                for task, (n, t) in teachers.items()
            },
            "teacher_weights": {task: t.state_dict() for task, (_, t) in teachers.items()},
            "student": student.state_dict(),
            "label_tasks": list(label_tasks),
        },
        path,
    )


def export_local(
    teachers: dict[str, tuple[str, nn.Module]],
    sample: npt.NDArray[np.uint8],
    example: torch.Tensor,
    out: Path,
) -> dict[str, str]:
    """Each teacher as a whole ONNX graph for on-device fallback (see device_client/local.py)."""
    files: dict[str, str] = {}
    for task, (_, teacher) in teachers.items():
        file = "local.onnx" if not files else f"local_{task}.onnx"
        if task == "detection":
            _export_onnx(
                _LocalDetector(teacher),
                (torch.from_numpy(sample),),
                out / file,
                ["image"],
                ["boxes", "scores", "labels"],
                dynamic={"image": {0: "height", 1: "width"}, "boxes": {0: "n"},
                         "scores": {0: "n"}, "labels": {0: "n"}},
            )
        else:
            _export_onnx(_LocalClassifier(teacher), (example,), out / file, ["image"], ["logits"])
        files[task] = file
    return files


def image_branches(sample: npt.NDArray[np.uint8], repeats: int = 3) -> list[Branch]:
    """Full-frame offload at each of IMAGE_QUALITIES, JPEG and WebP: the quality is the branch's
    own field (the device encodes at it), the figures a first estimate on `sample` that
    `splitedge eval --write-manifest` replaces with the test split's."""
    branches = []
    kinds: tuple[tuple[CodecId, Literal["jpeg", "webp"]], ...] = (
        (CodecId.JPEG, "jpeg"), (CodecId.WEBP, "webp"))
    for codec_id, kind in kinds:
        for quality in IMAGE_QUALITIES:
            codec = make_codec(codec_id, quality=quality)

            def encode(codec: Codec = codec) -> object:
                return codec.encode(sample)

            branches.append(Branch(
                id=f"{kind}-q{quality}", kind=kind, codec=codec_id.name, quality=quality,
                input_size=(sample.shape[0], sample.shape[1]),
                expected_bytes=float(codec.encode(sample).nbytes),
                device_ms=_median_ms(encode, repeats),
            ))
    return branches


def measure_branches(
    student: SplitModel,
    root: Path,
    sample: npt.NDArray[np.uint8],
    repeats: int,
    teachers: dict[str, tuple[str, nn.Module]],
    local_models: dict[str, tuple[str, nn.Module]],
    label_tasks: tuple[str, ...] = (),
) -> tuple[Branch, ...]:
    """Figures on `sample`, on this machine: the median of `repeats` runs; multiply-adds counted
    by torch on the same frame."""
    bundle = load_bundle(root)
    frame = torch.from_numpy(sample)
    # a full frame offloaded runs the teachers on the edge (a label-trained task: the head and its
    # tail, counted below); `local` runs its models on the device
    # (a task read off the detector's answer, largest_object, adds nothing to it)
    teacher_macs = sum(count_macs(_whole(task, t), frame)
                       for task, (_, t) in teachers.items()
                       if task not in label_tasks and not isinstance(t, LargestObject))
    local_macs = sum(count_macs(_whole(task, m), frame)
                     for task, (_, m) in local_models.items())
    runner = HeadRunner(bundle)
    head_input = runner.preprocess(sample)
    size = head_input.geometry.input_size
    tail_sizes = ([size], [head_input.geometry.original])
    branches = []
    for width in runner.widths:
        runner.set_width(width)
        prepared = Prepared(head_input, None, {})
        coded = runner.encode(prepared)  # head, regions and coding, as the device runs them
        assert coded.payload is not None and coded.latent is not None
        latent, payload = coded.latent, coded.payload
        device_ms = _median_ms(partial(runner.encode, prepared), repeats)
        latent_hat = torch.from_numpy(runner.codec.decode(payload))[None]

        def tails(latent_hat: torch.Tensor = latent_hat, sizes: Any = tail_sizes) -> None:
            with torch.no_grad():
                run_tails(student.tails, latent_hat, sizes[0], sizes[1], tuple(student.tails))

        student.set_width(width)
        try:
            head_macs = count_macs(_HeadGraph(student), torch.from_numpy(head_input.image))
        finally:
            student.set_width(max(runner.widths))
        branches.append(Branch(
            id=split_branch_id(width), kind="split", width=width,
            latent_channels=int(latent.shape[0]), input_size=size,
            codec=CodecId.FACTORIZED_ANS.name, expected_bytes=float(payload.nbytes),
            device_ms=device_ms, edge_ms=_median_ms(tails, repeats),
            device_macs=head_macs, edge_macs=count_macs(tails),
        ))
    if label_tasks:  # the edge runs the widest head on the full frame, then those tails
        widest = max((b for b in branches), key=lambda b: b.width or 0.0)
        runner.set_width(max(runner.widths))
        full_latent = torch.from_numpy(runner.codec.decode(
            runner.codec.encode(runner.head(head_input.image)[0])))[None]  # all of it: no regions
        teacher_macs += (widest.device_macs or 0) + sum(
            count_macs(student.tails[t], full_latent, *tail_sizes) for t in label_tasks)
    local = LocalRunner(bundle)
    if "detection" in local.sessions:
        local_ms = _median_ms(lambda: local.detect(sample), repeats)
    else:
        local_ms = _median_ms(lambda: local.classify(sample), repeats)
    branches.append(Branch(id="local", kind="local", device_ms=local_ms, edge_ms=0.0,
                           expected_bytes=0.0, device_macs=local_macs, edge_macs=0))
    branches += [b.model_copy(update={"edge_macs": teacher_macs})
                 for b in image_branches(sample, repeats)]
    branches.append(Branch(id="skip", kind="skip", expected_bytes=0.0, device_ms=0.0,
                           edge_ms=0.0))
    return tuple(branches)


class _HeadGraph(nn.Module):
    def __init__(self, student: SplitModel) -> None:
        super().__init__()
        self.head = student.head

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.head.regions is not None:
            return self.head.with_regions(image)
        latent, score = self.head(image)
        return latent, score


class _Gate(nn.Module):
    def __init__(self, student: SplitModel) -> None:
        super().__init__()
        self.head = student.head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head.gate(image)


class _LocalDetector(nn.Module):
    """uint8 HWC RGB frame → the teacher's boxes/scores/labels in original pixels."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        result = self.detector([image.permute(2, 0, 1).float() / 255.0])[0]
        return result["boxes"], result["scores"], result["labels"]


class _LocalClassifier(nn.Module):
    """uint8 NHWC preprocessed image → the teacher's logits (ImageNet normalization inside)."""

    mean: torch.Tensor  # buffers (registered in __init__)
    std: torch.Tensor

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.register_buffer("mean", torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        logits: torch.Tensor = self.classifier(x)
        return logits


def _export_heads(student: SplitModel, example: torch.Tensor, out: Path) -> list[str]:
    files = []
    previous = student.width
    try:
        for width in student.config.widths:
            student.set_width(width)  # the slices become constants of this width's graph
            outputs, dynamic = ["latent", "prefilter_score"], {
                "image": {1: "height", 2: "width"},
                "latent": {2: "latent_height", 3: "latent_width"}}
            if student.head.regions is not None:
                outputs.append("regions")
                dynamic["regions"] = {2: "region_rows", 3: "region_cols"}
            _export_onnx(_HeadGraph(student), (example,), out / head_file(width), ["image"],
                         outputs, dynamic=dynamic)
            files.append(head_file(width))
    finally:
        student.set_width(previous)
    return files


def _export_onnx(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic: dict[str, dict[int, str]] | None = None,
) -> None:
    if dynamic is None:
        dynamic = {"image": {1: "height", 2: "width"}}
    with _quiet_export(), torch.no_grad():
        # The TorchScript exporter: the dynamo one needs onnxscript and cannot yet trace
        # torchvision's detection post-processing (data-dependent shapes).
        torch.onnx.export(
            module.eval(), args, str(path), dynamo=False, opset_version=OPSET,
            input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
        )


@contextmanager
def _quiet_export() -> Iterator[None]:
    """The legacy exporter warns that it is legacy, and torchvision's detection code warns while
    traced (python ints from shapes); both are expected here and nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.filterwarnings("ignore", message=r".*feature will be removed")
        warnings.filterwarnings("ignore", message=r"To copy construct from a tensor")
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator")
        yield


def _example_input(sample: npt.NDArray[np.uint8], preprocessing: Preprocessing) -> torch.Tensor:
    return torch.from_numpy(Preprocessor(preprocessing)(sample).image)


def count_macs(run: Callable[..., object], *args: Any) -> int:
    """Multiply-adds of one call, as torch's flop counter sees it (2 flops = 1 MAC)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        run(*args)
    return int(counter.get_total_flops() // 2)


def _whole(task: str, model: nn.Module) -> Callable[[torch.Tensor], object]:
    """A teacher or local model on one uint8 HWC frame, as its ONNX export runs it."""
    if task == "detection":
        return _LocalDetector(model)
    return lambda frame: model(frame.permute(2, 0, 1)[None].float() / 255.0)


def _median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: first runs allocate
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return float(statistics.median(times))


def _detector_size(teacher: nn.Module) -> dict[str, int]:
    """A detector's resize rule, when it may differ from the registry's default (a teacher
    trained at another input size): the edge rebuilds the teacher with it."""
    transform = getattr(teacher, "transform", None)
    if transform is None or transform.fixed_size is not None:
        return {}
    return {"min_size": int(transform.min_size[-1]), "max_size": int(transform.max_size)}


def _num_classes(name: str, teacher: nn.Module) -> int:
    if isinstance(teacher, LargestObject):
        return teacher.num_classes
    if teacher_spec(name).task == "classification":
        last = [m for m in teacher.modules() if isinstance(m, nn.Linear)][-1]
        return int(last.out_features)
    roi_heads = getattr(teacher, "roi_heads", None)
    if roi_heads is not None:
        return int(roi_heads.box_predictor.cls_score.out_features)
    head = teacher.head
    classification: Any = getattr(head, "classification_head", None)
    # RetinaNet's head says num_classes; SSD's scoring heads call it num_columns
    count = getattr(classification, "num_classes", None) or classification.num_columns
    return int(count)
