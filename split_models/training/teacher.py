"""Teachers from scratch on a COCO dataset: a torchvision detector on the boxes, or a classifier
on frame-level labels (the largest object's class, 0 = no object; see `data.coco.frame_label`).

Writes `<out>/teacher.pt`: {"name", "num_classes", "min_size", "max_size", "classes",
"model": state dict}; `build_teacher(name, "<out>/teacher.pt")` reads it as any checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from split_models.data.coco import CocoFrames, Frame, frame_label, open_frames
from split_models.teachers import IMAGENET_MEAN, IMAGENET_STD, build_teacher, teacher_spec
from split_models.training.config import Data, DetectorSampling, Experiment, TeacherRef
from split_models.training.loop import (
    RunResult,
    batch_indices,
    make_optimizer,
    run_steps,
    set_lr,
    step_generator,
)
from split_models.training.style_randomization import MixStyle, amplitude_mix, random_convolution


def load_teacher(ref: TeacherRef, num_classes: int | None = None) -> tuple[nn.Module, list[str]]:
    """A teacher and its class names: from our `teacher.pt` (sizes and classes inside) or from
    the registry (torchvision weights name, other checkpoint, or random init)."""
    classes: list[str] = []
    min_size, max_size = ref.min_size, ref.max_size
    weights: str | None = ref.checkpoint
    count = ref.num_classes or num_classes
    if ref.checkpoint and Path(ref.checkpoint).suffix in {".pt", ".pth"}:
        saved = torch.load(ref.checkpoint, map_location="cpu", weights_only=True)
        if isinstance(saved, dict) and "num_classes" in saved:
            count = int(saved["num_classes"])
            classes = list(saved.get("classes", []))
            min_size = min_size or saved.get("min_size")
            max_size = max_size or saved.get("max_size")
    teacher = build_teacher(ref.name, weights, count)
    set_detector_size(teacher, min_size, max_size)
    return teacher, classes


def set_detector_size(teacher: nn.Module, min_size: int | None, max_size: int | None) -> None:
    transform = getattr(teacher, "transform", None)
    if transform is None:
        return
    if min_size:
        transform.min_size = (int(min_size),)
    if max_size:
        transform.max_size = int(max_size)


def set_sampling(detector: nn.Module, sampling: DetectorSampling) -> None:
    """Training-time proposal and RoI counts of a two-stage detector (no-op for others)."""
    rpn, roi_heads = getattr(detector, "rpn", None), getattr(detector, "roi_heads", None)
    if rpn is None or roi_heads is None:
        return
    rpn._pre_nms_top_n["training"] = sampling.rpn_pre_nms
    rpn._post_nms_top_n["training"] = sampling.rpn_post_nms
    roi_heads.fg_bg_sampler.batch_size_per_image = sampling.roi_samples


def flip(frame: Frame) -> Frame:
    width = frame.image.shape[1]
    boxes = frame.boxes.copy()
    boxes[:, [0, 2]] = width - frame.boxes[:, [2, 0]]
    return Frame(np.ascontiguousarray(frame.image[:, ::-1]), boxes, frame.labels, frame.image_id,
                 frame.labelled)


def photometric(frame: Frame, generator: torch.Generator) -> Frame:
    """Contrast, brightness and saturation jitter; sometimes a channel permutation or grey."""
    draws = torch.rand(6, generator=generator).tolist()
    image = frame.image.astype(np.float32)
    grey = image.mean(axis=2, keepdims=True)
    saturation = 0.0 if draws[4] < 0.1 else 0.4 + 1.0 * draws[2]
    image = grey + (image - grey) * saturation
    image = (image - 128) * (0.6 + 0.8 * draws[0]) + 128 + (draws[1] - 0.5) * 80
    if draws[3] < 0.2:
        order = torch.randperm(3, generator=generator).numpy()
        image = image[:, :, order]
    out = np.clip(image, 0, 255).astype(np.uint8)
    return Frame(np.ascontiguousarray(out), frame.boxes, frame.labels, frame.image_id,
                 frame.labelled)


# RandAugment's colour operations (Cubuk et al.; torchvision's own functions), each drawn at a
# random magnitude m in [0, 1): a look no generator style produced, so the detector must rely on
# shape.
COLOUR_OPS = ("hue", "posterize", "solarize", "blur", "sharpness", "gamma", "invert", "equalize",
              "autocontrast")


def colour_op(name: str, x: torch.Tensor, m: float) -> torch.Tensor:
    """One of COLOUR_OPS on a uint8 CHW image."""
    ops: dict[str, Callable[[], Any]] = {
        "hue": lambda: TF.adjust_hue(x, m - 0.5),
        "posterize": lambda: TF.posterize(x, 2 + int(m * 4)),
        "solarize": lambda: TF.solarize(x, 96 + int(m * 144)),
        "blur": lambda: TF.gaussian_blur(x, [5, 5], [0.3 + 1.7 * m]),
        "sharpness": lambda: TF.adjust_sharpness(x, 1 + 4 * m),
        "gamma": lambda: TF.adjust_gamma(x, 0.4 + 1.6 * m),
        "invert": lambda: TF.invert(x),
        "equalize": lambda: TF.equalize(x),
        "autocontrast": lambda: TF.autocontrast(x),
    }
    out: torch.Tensor = ops[name]()
    return out


def colour_ops(frame: Frame, generator: torch.Generator, count: int) -> Frame:
    """`count` operations of COLOUR_OPS in a row, each with a random magnitude."""
    image = torch.from_numpy(frame.image).permute(2, 0, 1)
    picks = torch.randint(len(COLOUR_OPS), (count,), generator=generator).tolist()
    for pick, magnitude in zip(picks, torch.rand(count, generator=generator).tolist(),
                               strict=True):
        image = colour_op(COLOUR_OPS[pick], image, magnitude)
    out = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    return Frame(out, frame.boxes, frame.labels, frame.image_id, frame.labelled)


def augment(
    frame: Frame, generator: torch.Generator, flips: bool, colours: bool, ops: int = 0
) -> Frame:
    if flips and torch.rand(1, generator=generator) < 0.5:
        frame = flip(frame)
    if colours and torch.rand(1, generator=generator) < 0.8:
        frame = photometric(frame, generator)
    if ops and torch.rand(1, generator=generator) < 0.5:
        frame = colour_ops(frame, generator, ops)
    return frame


def augment_batch(frames: list[Frame], generator: torch.Generator, data: Data) -> list[Frame]:
    """`augment` per frame, then style randomization (each with its own probability); a frame's
    amplitude-mix partner is the next frame of the batch, as drawn (before augmentation)."""
    out = [augment(f, generator, data.flip, data.photometric, data.colour_ops) for f in frames]
    for i, frame in enumerate(out):
        image = frame.image
        if data.random_convolution and torch.rand(1, generator=generator) < data.random_convolution:
            image = random_convolution(image, generator)
        if data.amplitude_mix and torch.rand(1, generator=generator) < data.amplitude_mix:
            image = amplitude_mix(image, frames[(i + 1) % len(frames)].image, generator)
        if image is not frame.image:
            out[i] = Frame(image, frame.boxes, frame.labels, frame.image_id, frame.labelled)
    return out


def to_float(frame: Frame) -> torch.Tensor:
    return torch.from_numpy(frame.image).permute(2, 0, 1).float() / 255.0


def classifier_input(frames: list[Frame]) -> torch.Tensor:
    """Whole frames, ImageNet-normalized, stacked (bottom/right padded to the largest)."""
    tensors = [to_float(f) for f in frames]
    height = max(t.shape[1] for t in tensors)
    width = max(t.shape[2] for t in tensors)
    batch = torch.stack(
        [F.pad(t, (0, width - t.shape[2], 0, height - t.shape[1])) for t in tensors]
    )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (batch - mean) / std


def train_teacher(experiment: Experiment, out: Path) -> RunResult:
    assert experiment.teacher is not None
    config = experiment.teacher
    frames = open_frames(experiment.data.train)
    if not isinstance(frames, CocoFrames):
        raise ValueError("a teacher trains on labels: data.train must be a COCO .json")
    task = teacher_spec(config.teacher.name).task
    num_classes = frames.num_classes  # + background (detection) or + "no object" (classification)
    torch.manual_seed(experiment.seed)
    model, _ = load_teacher(config.teacher, num_classes)
    set_sampling(model, config.sampling)
    model.train()
    optim = config.optim
    optimizer = make_optimizer(optim, [p for p in model.parameters() if p.requires_grad])
    # the average copies the model before MixStyle hooks it: the saved teacher carries no hooks
    average = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema),
                             use_buffers=True) if config.ema else None)
    mixstyle = MixStyle(model, config.mixstyle) if config.mixstyle else None

    def step(index: int, lr: float) -> dict[str, float]:
        set_lr(optimizer, lr)
        generator = step_generator(experiment.seed, index)
        if mixstyle is not None:
            mixstyle.reseed(experiment.seed, index)
        batch = [frames[i] for i in batch_indices(len(frames), optim.batch_size,
                                                  experiment.seed, index)]
        batch = augment_batch(batch, generator, experiment.data)
        if task == "detection":
            targets = [{"boxes": torch.from_numpy(f.boxes), "labels": torch.from_numpy(f.labels)}
                       for f in batch]
            losses = model([to_float(f) for f in batch], targets)
        else:
            labels = torch.tensor([frame_label(f) for f in batch])
            losses = {"ce": F.cross_entropy(model(classifier_input(batch)), labels)}
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        if average is not None:
            average.update_parameters(model)
        return {"loss": float(loss.detach()),
                **{k.removeprefix("loss_"): float(v.detach()) for k, v in losses.items()}}

    modules: dict[str, nn.Module] = {"model": model}
    if average is not None:
        modules["average"] = average
    result = run_steps(f"teacher {config.teacher.name}", optim, step, out / "teacher.ckpt",
                       modules, {"optimizer": optimizer})
    if mixstyle is not None:
        mixstyle.remove()
    if average is not None:
        model = average.module
    transform = getattr(model, "transform", None)
    saved: dict[str, Any] = {
        "name": config.teacher.name, "num_classes": num_classes,
        "classes": ["__background__" if task == "detection" else "none", *frames.class_names],
        "min_size": int(transform.min_size[-1]) if transform is not None else None,
        "max_size": int(transform.max_size) if transform is not None else None,
        "model": model.state_dict(),
    }
    torch.save(saved, out / "teacher.pt")
    return result
