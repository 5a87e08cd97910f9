"""Students: the bottleneck of a `SplitModel` trained against frozen teachers.

    stage 1   head (stem + encoder) + decoders (+ prior) against the teachers' features
              hnd:       loss at the split point only; the rate trains the prior, not the encoder
              ghnd:      losses at the split point and `ghnd_layers` after it
              entropic:  ghnd's distortion + λ · bits per pixel (compressai's EntropyBottleneck,
                         its aux loss on a separate optimizer)
              background_weight < 1: the distortion discounted away from the labelled objects
              slimmable: each step runs the smallest, the largest and `random_widths` random
                         widths (the sandwich rule), each distilled from the teacher
    BN        statistics recalibrated per width (encoder and decoders)
    update()  the prior's CDF tables
    stage 2   encoder + prior frozen; the tails (decoder + the rest of the teacher) fine-tuned on
              the hard-quantized latent: distortion + the tails' own losses when labels exist
    prefilter on the (frozen) stem: labels from ground truth or the teacher's detections;
              threshold = the highest score keeping recall ≥ `target_recall` on validation
    regions   the region head (split_models.regions) on the frozen latent, every width each step:
              a target per cell the objects' boxes (grown by `region_margin`) overlap; per
              width, the threshold keeping that width's `regions_recall` of those cells on
              validation
    regions tails  stage 2's loss once more, on the latent as the device codes it (the cells off
              the regions at the prior's medians; the teacher's features asked only where coded)
    export    the bundle (split_models.export) with real class names, the prefilter threshold
              and each width's regions threshold

It trains the modules of `split_models.split.build_student` — the same ones the bundle exports.
HND / GHND / prefilter work on unlabeled frames (`data.train` may be a folder of images).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import sigmoid_focal_loss

from device_client.preprocess import Preprocessor
from shared.bundle import load_bundle, write_manifest
from shared.codecs import FactorizedAnsCodec, FactorizedTables, Regions
from split_models.data.coco import CocoFrames, Frame, Frames, frame_label, open_frames
from split_models.export import export_bundle, preprocessing_for
from split_models.slimmable import SwitchableBatchNorm2d
from split_models.split import SplitModel, build_student, normalization
from split_models.tails import DetectionTail, LargestObject
from split_models.teachers import teacher_spec
from split_models.training.config import Experiment, Optim, StudentTraining, TeacherRef
from split_models.training.loop import (
    RunResult,
    batch_indices,
    make_optimizer,
    run_steps,
    set_lr,
    step_generator,
)
from split_models.training.rate_control import RateControl
from split_models.training.teacher import augment_batch, load_teacher, set_sampling

Features = dict[str, torch.Tensor]


@dataclass
class Batch:
    images: torch.Tensor  # uint8 (B, H, W, 3): what the device feeds the head
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    targets: list[dict[str, torch.Tensor]]  # boxes in head-input pixels
    frame_labels: torch.Tensor
    labelled: bool


class StudentTrainer:
    """Teachers, student and data of one experiment; each stage is a method."""

    def __init__(self, experiment: Experiment, out: Path) -> None:
        assert experiment.student is not None
        self.experiment, self.config, self.out = experiment, experiment.student, out
        torch.manual_seed(experiment.seed)
        self.frames: Frames = open_frames(experiment.data.train)
        self.val: Frames | None = open_frames(experiment.data.val) if experiment.data.val else None
        self.teachers: dict[str, tuple[str, nn.Module]] = {}
        self.class_names: dict[str, list[str]] = {}
        for task, ref in self.config.teachers.items():
            label_count, label_names = self._label_classes(task, ref)
            teacher, classes = load_teacher(ref, label_count)
            for parameter in teacher.parameters():
                parameter.requires_grad_(False)
            self.teachers[task] = (ref.name, teacher.eval())
            self.class_names[task] = classes or label_names
        self.local = {task: (ref.name, load_teacher(ref)[0].eval())
                      for task, ref in self.config.local.items()}
        self.student = build_student(self.teachers, self.config.split)
        first_name, first_teacher = next(iter(self.teachers.values()))
        self.preprocess = Preprocessor(preprocessing_for(first_name, first_teacher, self.student))
        for tail in self.student.tails.values():
            if isinstance(tail, DetectionTail):
                set_sampling(cast(nn.Module, tail.rest), self.config.sampling)
        self.widths = self.student.config.widths
        # Tasks with a trained teacher are distilled; the others' tails learn from labels alone.
        self.distilled = tuple(t for t, ref in self.config.teachers.items() if ref.checkpoint)
        # Tasks with a decoder of their own: a task read off another's answer (largest_object)
        # has none, and nothing to learn.
        self.decoded = tuple(t for t, (_, m) in self.teachers.items()
                             if not isinstance(m, LargestObject))
        self.label_tasks = tuple(t for t in self.decoded if t not in self.distilled)
        self.layers = {task: self._layers(task) for task in self.distilled}

    def _label_classes(self, task: str, ref: TeacherRef) -> tuple[int | None, list[str]]:
        """A classifier learnt from labels alone: the data's frame labels ("none" + classes)."""
        if ref.checkpoint or task != "classification" or not isinstance(self.frames, CocoFrames):
            return None, []
        return self.frames.num_classes, ["none", *self.frames.class_names]

    # --- data -------------------------------------------------------------------------------

    def batch(self, frames: list[Frame]) -> Batch:
        inputs = [self.preprocess(f.image) for f in frames]
        height = max(i.image.shape[1] for i in inputs)
        width = max(i.image.shape[2] for i in inputs)
        pad = torch.tensor(self.preprocess.spec.pad_value, dtype=torch.uint8)
        images = pad.expand(len(frames), height, width, 3).clone()
        targets = []
        for k, (frame, head_input) in enumerate(zip(frames, inputs, strict=True)):
            h, w = head_input.image.shape[1:3]
            images[k, :h, :w] = torch.from_numpy(head_input.image[0])
            geometry = head_input.geometry
            scale_y = geometry.resized[0] / geometry.original[0]
            scale_x = geometry.resized[1] / geometry.original[1]
            boxes = torch.from_numpy(frame.boxes) * torch.tensor([scale_x, scale_y] * 2)
            targets.append({"boxes": boxes, "labels": torch.from_numpy(frame.labels)})
        return Batch(
            images, [i.geometry.input_size for i in inputs], [i.geometry.original for i in inputs],
            targets, torch.tensor([frame_label(f) for f in frames]),
            all(f.labelled for f in frames),
        )

    def train_batch(self, step: int, batch_size: int) -> Batch:
        generator = step_generator(self.experiment.seed, step)
        indices = batch_indices(len(self.frames), batch_size, self.experiment.seed, step)
        frames = [self.frames[i] for i in indices]
        return self.batch(augment_batch(frames, generator, self.experiment.data))

    # --- features ---------------------------------------------------------------------------

    def _layers(self, task: str) -> tuple[str, ...]:
        """The teacher children whose outputs the distortion compares."""
        name, teacher = self.teachers[task]
        spec = teacher_spec(name)
        split_child = self.student.config.split_at.get(task) or spec.split_at
        if self.config.method == "hnd":
            return (split_child,)
        container = teacher.get_submodule(spec.container)
        names = [n for n, _ in container.named_children()]
        later = names[names.index(split_child) + 1 :]
        return (split_child, *(n for n in self.config.ghnd_layers if n in later))

    def teacher_features(self, batch: Batch) -> dict[str, Features]:
        out = {}
        with torch.no_grad():
            for task in self.distilled:
                name, teacher = self.teachers[task]
                mean, std = normalization(name, teacher)
                x = batch.images.permute(0, 3, 1, 2).float() / 255.0
                x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
                container = teacher.get_submodule(teacher_spec(name).container)
                out[task] = _collect(container, self.layers[task], partial(container, x))
        return out

    def tail_container(self, task: str) -> nn.Module:
        name, _ = self.teachers[task]
        rest = cast(nn.Module, self.student.tails[task].rest)
        return rest.get_submodule(teacher_spec(name).container)

    def decoder(self, task: str) -> nn.Module:
        name, _ = self.teachers[task]
        split_child = self.student.config.split_at.get(task) or teacher_spec(name).split_at
        return self.tail_container(task).get_submodule(split_child)

    def student_features(self, task: str, latent_hat: torch.Tensor) -> Features:
        container = self.tail_container(task)
        return _collect(container, self.layers[task], lambda: container(latent_hat))

    def distortion(self, task: str, latent_hat: torch.Tensor, target: Features,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
        """ghnd's MSE summed over the compared layers; with `weights` (position_weights) each
        position's squared error is scaled by the mean weight of the input pixels it covers (the
        maximum would make nearly every position of a stride-32 layer an object's)."""
        found = self.student_features(task, latent_hat)
        total = torch.zeros(())
        for name in self.layers[task]:
            if weights is None:
                total = total + F.mse_loss(found[name], target[name])
            else:
                height, width = found[name].shape[-2:]
                scale = F.adaptive_avg_pool2d(weights, (height, width))
                total = total + (scale * (found[name] - target[name]).square()).mean()
        return total

    def position_weights(self, batch: Batch) -> torch.Tensor | None:
        """(B, 1, H, W) distortion weights over the head input: 1 on each object's box grown by
        `object_margin` (at least 8 px a side), `background_weight` elsewhere. None where the
        distortion is plain MSE (weight 1 everywhere, or frames without boxes to say where)."""
        config = self.config
        if config.background_weight >= 1.0 or not batch.labelled:
            return None
        on_objects = self.object_map(batch, config.object_margin, 8.0)
        return on_objects + config.background_weight * (1.0 - on_objects)

    def object_map(self, batch: Batch, margin: float, least: float) -> torch.Tensor:
        """(B, 1, H, W) over the head input: 1 on each object's box grown by `margin` of its size
        (at least `least` px a side), 0 elsewhere. Boxes: the labels, or the detection teacher's
        boxes scoring ≥ `prefilter_score` on unlabeled frames."""
        count, height, width = batch.images.shape[:3]
        found = torch.zeros((count, 1, height, width))
        for k, boxes in enumerate(self.object_boxes(batch)):
            for x0, y0, x1, y1 in boxes.tolist():
                grow_x = max(least, margin * (x1 - x0))
                grow_y = max(least, margin * (y1 - y0))
                found[k, 0, max(0, int(y0 - grow_y)):max(0, int(y1 + grow_y + 1)),
                      max(0, int(x0 - grow_x)):max(0, int(x1 + grow_x + 1))] = 1.0
        return found

    def object_boxes(self, batch: Batch) -> list[torch.Tensor]:
        if batch.labelled:
            return [t["boxes"] for t in batch.targets]
        if "detection" not in self.teachers:
            raise ValueError("unlabeled frames need a detection teacher to say where objects are")
        _, detector = self.teachers["detection"]
        with torch.no_grad():
            found = detector([im.permute(2, 0, 1).float() / 255 for im in batch.images])
        return [f["boxes"][f["scores"] >= self.config.prefilter_score] for f in found]

    def region_targets(self, batch: Batch, grid: tuple[int, int]) -> torch.Tensor:
        """(B, 1, rows, cols): 1 where a region cell overlaps an object's box grown by
        `region_margin`."""
        cell = self.student.config.roi_cell * self.student.latent_stride
        on_objects = self.object_map(batch, self.config.region_margin, 0.0)
        targets = F.max_pool2d(on_objects, cell, ceil_mode=True)
        rows, cols = grid  # the head's grid: pad or crop the target to it (an odd input size)
        targets = F.pad(targets, (0, max(0, cols - targets.shape[3]),
                                  0, max(0, rows - targets.shape[2])))
        return targets[:, :, :rows, :cols]

    def sandwich(self, step: int) -> list[float]:
        if not self.config.slimmable or len(self.widths) == 1:
            return [max(self.widths)]
        middle = list(self.widths[1:-1])
        generator = step_generator(self.experiment.seed + 17, step)
        picks = torch.randperm(len(middle), generator=generator)[: self.config.random_widths]
        return [self.widths[-1], self.widths[0], *(middle[i] for i in picks.tolist())]

    # --- stages -----------------------------------------------------------------------------

    def stage1(self) -> RunResult:
        student, config = self.student, self.config
        entropic = config.method == "entropic"
        decoders = nn.ModuleList(self.decoder(t) for t in self.distilled)
        trainable = nn.ModuleList([student.head.stem, student.head.encoder, decoders])
        density = [p for n, p in student.prior.named_parameters() if not n.endswith("quantiles")]
        main = [*trainable.parameters(), *density]
        aux = [p for n, p in student.prior.named_parameters() if n.endswith("quantiles")]
        _freeze(student)
        for parameter in [*main, *aux]:
            parameter.requires_grad_(True)
        groups: list[dict[str, Any]] = [
            {"params": list(trainable.parameters())},
            {"params": density, "lr_scale": config.prior_lr_scale},
        ]
        optimizer = make_optimizer(config.stage1, groups)
        aux_optimizer = torch.optim.Adam(aux, lr=config.aux_lr)
        modules: dict[str, nn.Module] = {"student": student}
        control = None
        if entropic and config.rate_target is not None:
            control = RateControl(self.widths, [config.lambda_at(w) for w in self.widths],
                                  [cast(float, config.rate_target_at(w)) for w in self.widths])
            modules["rate"] = control  # its λs resume with the stage

        def step(index: int, lr: float) -> dict[str, float]:
            _train_modes(student, [*trainable, student.prior])
            set_lr(optimizer, lr)
            batch = self.train_batch(index, config.stage1.batch_size)
            targets = self.teacher_features(batch)
            weights = self.position_weights(batch)
            pixels = batch.images.shape[0] * batch.images.shape[1] * batch.images.shape[2]
            optimizer.zero_grad(set_to_none=True)
            widths = self.sandwich(index)
            logged = {"distortion": 0.0, "bpp": 0.0, "rate": 0.0}
            for width in widths:
                student.set_width(width)
                latent, _ = student.head(batch.images)
                latent_hat, likelihoods = student.prior(latent, config.rounding)
                if not entropic:  # the rate fits the prior to the latent; it never moves it
                    _, likelihoods = student.prior(latent.detach())
                bpp = -torch.log2(likelihoods).sum() / pixels
                distortion = sum((self.distortion(t, latent_hat, targets[t], weights)
                                  for t in self.distilled), torch.zeros(()))
                if control is not None:
                    frames = latent.shape[0]
                    control.observe(width, float(student.prior.coded_bits(latent).sum()) / 8
                                    / frames)
                    weight = control.weight(width)
                else:
                    weight = config.lambda_at(width) if entropic else 1.0
                loss = (distortion + weight * bpp) / len(widths)
                loss.backward()
                logged["distortion"] += float(distortion.detach()) / len(widths)
                logged["bpp"] += float(bpp.detach()) / len(widths)
                logged["rate"] += float(weight * bpp.detach()) * entropic / len(widths)
            nn.utils.clip_grad_norm_(main, 5.0)
            optimizer.step()
            aux_optimizer.zero_grad(set_to_none=True)
            aux_loss = student.prior.loss()
            aux_loss.backward()
            aux_optimizer.step()
            student.set_width(max(self.widths))
            steered = {}
            if control is not None:
                steered = control.logged()  # the λs this step trained with
                control.step(index)
            return {"loss": logged["distortion"] + logged["rate"],
                    **logged, "aux": float(aux_loss.detach()), **steered}

        return run_steps(f"stage1 {config.method}", config.stage1, step,
                         self.out / "stage1.ckpt", modules,
                         {"main": optimizer, "aux": aux_optimizer})

    def stage2(self, optim: Optim, regions: dict[str, float] | None = None) -> RunResult:
        """The tails on the coded latent, head and prior frozen. With `regions` (per width, the
        region head's threshold): on the latent as the device codes it, the cells below the
        threshold at the prior's medians ("regions tails", its own checkpoint)."""
        student, config = self.student, self.config
        tails, optimizer = self._trainable_tails(self.distilled, optim)
        medians = student.prior.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)

        def step(index: int, lr: float) -> dict[str, float]:
            student.eval()
            set_lr(optimizer, lr)
            batch = self.train_batch(index, optim.batch_size)
            targets = self.teacher_features(batch)
            weights = self.position_weights(batch)
            optimizer.zero_grad(set_to_none=True)
            widths = self.sandwich(index)
            logged = {"distortion": 0.0, "task": 0.0}
            for width in widths:
                student.set_width(width)
                coded = weights
                with torch.no_grad():
                    latent = student.head(batch.images)[0]
                    latent_hat = student.prior.quantize(latent)
                    if regions is not None:  # the teacher's features only where coded
                        latent_hat, kept = self.masked(latent, latent_hat, regions[str(width)],
                                                       medians)
                        coded = self.on_input(kept.float(), batch)
                        coded = coded if weights is None else coded * weights
                tails.train()
                distortion = sum((self.distortion(t, latent_hat, targets[t], coded)
                                  for t in self.distilled), torch.zeros(()))
                task_loss = torch.zeros(())
                if config.task_loss and batch.labelled:
                    task_loss = self.task_losses(latent_hat, batch, self.distilled)
                loss = (distortion + task_loss) / len(widths)
                loss.backward()
                logged["distortion"] += float(distortion.detach()) / len(widths)
                logged["task"] += float(task_loss.detach()) / len(widths)
            nn.utils.clip_grad_norm_(tails.parameters(), 5.0)
            optimizer.step()
            student.set_width(max(self.widths))
            return {"loss": logged["distortion"] + logged["task"], **logged}

        name, checkpoint = (("stage2 tails", "stage2.ckpt") if regions is None
                            else ("regions tails", "regions_tails.ckpt"))
        return run_steps(name, optim, step, self.out / checkpoint,
                         {"student": student}, {"main": optimizer})

    def masked(self, latent: torch.Tensor, latent_hat: torch.Tensor, threshold: float,
               medians: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(`latent_hat` as the device codes it with regions: the medians outside the cells
        whose region score reaches `threshold`; the kept positions, (B, 1, h, w) bool)."""
        region_head = self.student.head.regions
        assert region_head is not None
        cells = torch.sigmoid(region_head(latent)) >= threshold
        kept = _grow(cells, self.student.config.roi_cell, latent.shape[2:])
        return torch.where(kept, latent_hat, medians[:, : latent.shape[1]]), kept

    def on_input(self, latent_map: torch.Tensor, batch: Batch) -> torch.Tensor:
        """A (B, 1, h, w) map over latent positions, as one over the head's input pixels."""
        return _grow(latent_map, self.student.latent_stride, batch.images.shape[1:3])

    def _trainable_tails(
        self, tasks: tuple[str, ...], optim: Optim
    ) -> tuple[nn.ModuleList, torch.optim.Optimizer]:
        """Everything frozen but the tails of `tasks`, and their optimizer."""
        _freeze(self.student)
        tails = nn.ModuleList(self.student.tails[t] for t in tasks)
        for parameter in tails.parameters():
            parameter.requires_grad_(True)
        return tails, make_optimizer(optim, list(tails.parameters()))

    def task_losses(
        self, latent_hat: torch.Tensor, batch: Batch, tasks: tuple[str, ...]
    ) -> torch.Tensor:
        total = torch.zeros(())
        for task in tasks:
            tail = self.student.tails[task]
            if task == "detection":
                total = total + sum(detection_losses(tail, latent_hat, batch).values())
            else:
                total = total + F.cross_entropy(tail(latent_hat, [], []), batch.frame_labels)
        return total

    def label_tails(self, optim: Optim) -> RunResult:
        """The tails of `label_tasks` on labels alone: head and prior frozen, each step the coded
        latent of the sandwich's widths (the tail must read every width's latent)."""
        student = self.student
        tails, optimizer = self._trainable_tails(self.label_tasks, optim)

        def step(index: int, lr: float) -> dict[str, float]:
            student.eval()
            set_lr(optimizer, lr)
            batch = self.train_batch(index, optim.batch_size)
            if not batch.labelled:
                raise ValueError("label_tails needs labelled frames (data.train: a COCO .json)")
            optimizer.zero_grad(set_to_none=True)
            widths = self.sandwich(index)
            total = 0.0
            for width in widths:
                student.set_width(width)
                with torch.no_grad():
                    latent_hat = student.prior.quantize(student.head(batch.images)[0])
                tails.train()
                loss = self.task_losses(latent_hat, batch, self.label_tasks) / len(widths)
                loss.backward()
                total += float(loss.detach())
            nn.utils.clip_grad_norm_(tails.parameters(), 5.0)
            optimizer.step()
            student.set_width(max(self.widths))
            return {"loss": total}

        return run_steps(f"label tails {'+'.join(self.label_tasks)}", optim, step,
                         self.out / "label_tails.ckpt", {"student": student}, {"main": optimizer})

    def recalibrate(self) -> None:
        """Per width: forget the switchable BN statistics and re-estimate them (cumulative mean)
        on training batches, with everything else frozen in eval mode."""
        student = self.student
        # Any: the BN layers are reached through ModuleLists, which type their items as Module.
        switchable: list[Any] = [
            m for m in student.modules() if isinstance(m, SwitchableBatchNorm2d)
        ]
        decoders = [self.decoder(t) for t in self.decoded]
        with torch.no_grad():
            for index, width in enumerate(self.widths):
                student.eval()
                student.set_width(width)
                for layer in switchable:
                    bn = layer.bns[index]
                    bn.reset_running_stats()
                    bn.momentum = None
                    bn.train()
                for k in range(self.config.recalibrate_batches):
                    batch = self.train_batch(10_000_000 + k, self.config.stage1.batch_size)
                    latent = student.head(batch.images)[0]
                    latent_hat = student.prior.quantize(latent)
                    for decoder in decoders:
                        decoder(latent_hat)
                for layer in switchable:
                    layer.bns[index].momentum = 0.1
        student.set_width(max(self.widths))
        student.eval()

    def prefilter(self, optim: Optim) -> tuple[RunResult, dict[str, float]]:
        student = self.student
        _freeze(student)
        for parameter in student.head.prefilter.parameters():
            parameter.requires_grad_(True)
        optimizer = make_optimizer(optim, list(student.head.prefilter.parameters()))

        def step(index: int, lr: float) -> dict[str, float]:
            student.eval()
            student.head.prefilter.train()
            set_lr(optimizer, lr)
            batch = self.train_batch(index, optim.batch_size)
            labels = self.objects_present(batch)
            with torch.no_grad():
                features = student.head.stem(student.head.normalize(batch.images))
            score = student.head.prefilter(features).clamp(1e-6, 1 - 1e-6)
            loss = F.binary_cross_entropy(score, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return {"bce": float(loss.detach())}

        result = run_steps("prefilter", optim, step, self.out / "prefilter.ckpt",
                           {"student": student}, {"main": optimizer})
        student.eval()
        return result, self.prefilter_threshold()

    def objects_present(self, batch: Batch) -> torch.Tensor:
        return torch.tensor([float(len(boxes) > 0) for boxes in self.object_boxes(batch)])

    def prefilter_threshold(self) -> dict[str, float]:
        """The highest threshold with recall ≥ target on validation (train if none)."""
        frames = self.val if self.val is not None else self.frames
        scores, labels = [], []
        with torch.no_grad():
            for start in range(0, len(frames), 16):
                batch = self.batch([frames[i] for i in range(start, min(start + 16, len(frames)))])
                scores.append(self.student.head.gate(batch.images))
                labels.append(self.objects_present(batch))
        return choose_threshold(torch.cat(scores).numpy(), torch.cat(labels).numpy(),
                                self.config.target_recall)

    def regions(self, optim: Optim) -> tuple[RunResult, dict[str, dict[str, float]]]:
        """The region head (split_models.regions) on the frozen head's latent, every width each
        step: a target per cell, 1 where an object's box (grown by `region_margin`) overlaps it.
        Then, per width, the threshold that keeps `regions_recall` of those cells on validation
        frames."""
        student = self.student
        region_head = student.head.regions
        if region_head is None:
            raise ValueError("student.regions needs a region head: set split.region_channels")
        _freeze(student)
        for parameter in region_head.parameters():
            parameter.requires_grad_(True)
        optimizer = make_optimizer(optim, list(region_head.parameters()))

        def step(index: int, lr: float) -> dict[str, float]:
            student.eval()
            set_lr(optimizer, lr)
            batch = self.train_batch(index, optim.batch_size)
            losses = []
            with torch.no_grad():  # the stem is the same at every width: run it once
                features = student.head.stem(student.head.normalize(batch.images))
            for width in self.widths:
                student.set_width(width)
                with torch.no_grad():
                    latent = student.head.encoder(features)
                logits = region_head(latent)
                targets = self.region_targets(batch, (logits.shape[2], logits.shape[3]))
                losses.append(region_loss(logits, targets, self.config.regions_focal))
            loss = torch.stack(losses).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return {"bce": float(loss.detach())}

        try:
            result = run_steps("regions", optim, step, self.out / "regions.ckpt",
                               {"student": student}, {"main": optimizer})
            return result, self.region_thresholds()
        finally:
            student.set_width(max(self.widths))
            student.eval()

    def region_thresholds(self) -> dict[str, dict[str, float]]:
        """Per width (its str): the highest threshold whose recall of the objects' cells on
        validation (train if none) is ≥ `regions_recall`, its recall and the cells it keeps."""
        frames = self.val if self.val is not None else self.frames
        found = {}
        with torch.no_grad():
            for width in self.widths:
                self.student.set_width(width)
                cells, targets = [], []
                for start in range(0, len(frames), 16):
                    batch = self.batch([frames[i]
                                        for i in range(start, min(start + 16, len(frames)))])
                    regions = self.student.head.with_regions(batch.images)[2]
                    cells.append(regions.flatten())
                    targets.append(self.region_targets(
                        batch, (regions.shape[2], regions.shape[3])).flatten())
                chosen = choose_threshold(torch.cat(cells).numpy(), torch.cat(targets).numpy(),
                                          self.config.regions_recall_at(width))
                found[str(width)] = {"threshold": chosen["threshold"],
                                     "recall": chosen["recall"],
                                     "kept": 1.0 - chosen["skip_share"]}
        self.student.set_width(max(self.widths))
        return found

    def region_symbols(self, tables: FactorizedTables,
                       cuts: dict[float, float]) -> dict[int, npt.NDArray[np.int32]]:
        """Per width's channel count, (k, n): the symbols, as the device quantizes them, of the
        positions its regions threshold keeps on the first `regions_table_frames` training
        frames."""
        frames = self.frames
        count = min(len(frames), self.config.regions_table_frames)
        cell = self.student.config.roi_cell
        quantize = FactorizedAnsCodec(tables).quantize  # the device's rule
        found: dict[int, npt.NDArray[np.int32]] = {}
        with torch.no_grad():
            for width, cut in cuts.items():
                self.student.set_width(width)
                kept = []
                for start in range(0, count, 16):
                    batch = self.batch([frames[i] for i in range(start, min(start + 16, count))])
                    latents, _, scores = self.student.head.with_regions(batch.images)
                    for latent, score in zip(latents.numpy(), scores.numpy(), strict=True):
                        channels, height, width_ = latent.shape
                        where = Regions(score[0] >= cut, cell).positions(height, width_)
                        kept.append(quantize(latent).reshape(channels, -1)[:, where])
                found[kept[0].shape[0]] = np.concatenate(kept, axis=1)
        self.student.set_width(max(self.widths))
        return found

    def export(self, prefilter: dict[str, float] | None,
               regions: dict[str, dict[str, float]] | None = None) -> Path:
        export = self.experiment.export
        assert export is not None
        frames = self.val if self.val is not None else self.frames
        sample = frames[0].image
        threshold = prefilter["threshold"] if prefilter else 0.0
        cuts = {float(w): r["threshold"] for w, r in (regions or {}).items()}
        root = export_bundle(self.student, self.teachers, export.out, name=export.name,
                             version=export.version, prefilter_threshold=threshold,
                             regions_thresholds=cuts, sample=sample, repeats=5,
                             local=self.local or None, label_tasks=self.label_tasks,
                             region_symbols=(partial(self.region_symbols, cuts=cuts)
                                             if cuts and self.config.regions_table_frames
                                             else None))
        manifest = load_bundle(root).manifest
        classes = dict(manifest.classes)
        for task, names in self.class_names.items():
            if names and len(names) == len(classes[task]):  # type: ignore[index]
                classes[task] = tuple(names)  # type: ignore[index]
        entropic = self.config.method == "entropic"
        branches = tuple(
            b.model_copy(update={"rate_lambda": self.config.lambda_at(b.width)})
            if b.kind == "split" and entropic and b.width is not None else b
            for b in manifest.branches)
        prefilter_spec = manifest.prefilter.model_copy(
            update={"target_recall": self.config.target_recall if prefilter else None})
        region_spec = manifest.regions and manifest.regions.model_copy(
            update={"target_recall": self.config.regions_recall_at(max(self.widths))})
        heads = tuple(h.model_copy(update={"regions_recall": self.config.regions_recall_at(
            h.width)}) if manifest.regions else h for h in manifest.heads)
        write_manifest(root, manifest.model_copy(update={
            "classes": classes, "branches": branches, "prefilter": prefilter_spec,
            "regions": region_spec, "heads": heads}))
        return root


def choose_threshold(
    scores: npt.NDArray[Any], positive: npt.NDArray[Any], target: float
) -> dict[str, float]:
    """The highest threshold whose recall on `positive` frames is ≥ target, and its figures."""
    positive = positive.astype(bool)
    if not positive.any():
        threshold = float(scores.max()) if len(scores) else 0.5
    else:
        ranked = np.sort(scores[positive])[::-1]
        needed = int(np.ceil(target * len(ranked)))
        threshold = float(ranked[max(0, needed - 1)])
    kept = scores >= threshold
    true_positive = float((kept & positive).sum())
    return {
        "threshold": threshold,
        "recall": true_positive / max(1.0, float(positive.sum())),
        "precision": true_positive / max(1.0, float(kept.sum())),
        "skip_share": float((~kept).mean()) if len(kept) else 0.0,
        "frames": float(len(scores)),
    }


def detection_losses(tail: nn.Module, latent_hat: torch.Tensor, batch: Batch) -> dict[str, Any]:
    """The train-mode half of torchvision's GeneralizedRCNN forward, from the latent on (the
    DetectionTail replays only its eval half)."""
    model: Any = tail.rest  # a torchvision detector (untyped)
    stride = cast(int, tail.latent_stride)
    size = (latent_hat.shape[0], 0, latent_hat.shape[2] * stride, latent_hat.shape[3] * stride)
    images = ImageList(latent_hat.new_empty(size), list(batch.image_sizes))
    features = model.backbone(latent_hat)
    proposals, rpn_losses = model.rpn(images, features, batch.targets)
    _, roi_losses = model.roi_heads(features, proposals, images.image_sizes, batch.targets)
    return {**rpn_losses, **roi_losses}


def _collect(container: nn.Module, names: tuple[str, ...], run: Callable[[], Any]) -> Features:
    found: Features = {}
    with _hooks(container, names, found):
        run()
    return found


@contextmanager
def _hooks(container: nn.Module, names: tuple[str, ...], found: Features) -> Iterator[None]:
    handles = []
    for name in names:
        def hook(_m: nn.Module, _a: Any, output: torch.Tensor, name: str = name) -> None:
            found[name] = output
        handles.append(container.get_submodule(name).register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _grow(grid: torch.Tensor, factor: int, size: tuple[int, ...]) -> torch.Tensor:
    """Each cell of a (B, 1, rows, cols) grid as a factor × factor block, cropped to `size`."""
    grown = grid.repeat_interleave(factor, 2).repeat_interleave(factor, 3)
    return grown[:, :, : size[0], : size[1]]


def region_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 0.0) -> torch.Tensor:
    """Mean binary cross-entropy per cell; with `gamma` > 0 torchvision's focal loss (no class
    weighting: the threshold, calibrated afterwards, sets the balance): each cell's term times
    (1 − p_true)^γ, the probability the head gives the wrong answer, to the γ."""
    if gamma > 0:
        loss: torch.Tensor = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=gamma,
                                                reduction="mean")
        return loss
    return F.binary_cross_entropy_with_logits(logits, targets)


def _freeze(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.eval()


def _train_modes(student: SplitModel, modules: list[nn.Module]) -> None:
    student.eval()
    for module in modules:
        module.train()


def train_student(experiment: Experiment, out: Path) -> dict[str, float]:
    """Every configured stage; returns wall seconds per stage. Finished stages are skipped on a
    re-run (their checkpoints say so), so a stopped run resumes where it was."""
    trainer = StudentTrainer(experiment, out)
    config: StudentTraining = trainer.config
    timings: dict[str, float] = {}
    timings["stage1"] = trainer.stage1().wall_s
    started = time.perf_counter()
    trainer.recalibrate()
    trainer.student.prior.entropy_bottleneck.update(force=True)
    timings["recalibrate"] = time.perf_counter() - started
    if config.stage2 is not None:
        timings["stage2"] = trainer.stage2(config.stage2).wall_s
        started = time.perf_counter()
        trainer.recalibrate()
        timings["recalibrate"] += time.perf_counter() - started
    if config.label_tails is not None and trainer.label_tasks:
        timings["label_tails"] = trainer.label_tails(config.label_tails).wall_s
        started = time.perf_counter()
        trainer.recalibrate()
        timings["recalibrate"] += time.perf_counter() - started
    prefilter = None
    if config.prefilter is not None:
        result, prefilter = trainer.prefilter(config.prefilter)
        timings["prefilter"] = result.wall_s
        (out / "prefilter.json").write_text(json.dumps(prefilter, indent=1))
    regions = None
    if config.regions is not None:
        result, regions = trainer.regions(config.regions)
        timings["regions"] = result.wall_s
        (out / "regions.json").write_text(json.dumps(regions, indent=1))
        if config.regions_tails is not None:
            thresholds = {w: r["threshold"] for w, r in regions.items()}
            timings["regions_tails"] = trainer.stage2(config.regions_tails, thresholds).wall_s
    torch.save(trainer.student.state_dict(), out / "student.pt")
    if experiment.export is not None:
        started = time.perf_counter()
        print(trainer.export(prefilter, regions))
        timings["export"] = time.perf_counter() - started
    return timings
