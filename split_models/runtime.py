"""The edge's tail runtime: a bundle's tails (split path) and teachers (full-offload path).

    runtime = TailRuntime.load("bundles/demo-shapes")
    results = runtime.run_latents([latent], [input_size], [original_size], ("detection",))
    results = runtime.run_images([frame_rgb], ("detection", "classification"))

A call is one batch: the server's batcher decides what goes in it. Latents of different sizes are
zero-padded bottom/right to the largest and stacked, as torchvision pads images; latents of
different widths are run as separate sub-batches. Results come back in input order with boxes in
original-image pixels (torchvision's `transform.postprocess`). Built once per bundle; per-call
code only converts arrays. Does no decoding of bytes (shared/codecs does) and no networking.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from shared.bundle import Bundle, Task, load_bundle
from shared.bundle.geometry import FrameGeometry, Size, frame_geometry
from shared.errors import BundleError
from shared.results import Classification, Detection, Results, detections_from_arrays
from split_models.split import SplitConfig, SplitModel, build_student
from split_models.tails import LargestObject, run_tails
from split_models.teachers import IMAGENET_MEAN, IMAGENET_STD, build_teacher

# The version of tail.pt's layout: export writes it, this runtime refuses any other.
TAIL_FORMAT = 1


# The tail's results are the one result model (shared/results.py), labels left to the caller
# (`Results.labelled`); the old name stays for the evaluation code that imports it.
TailResult = Results


class TailRuntime:
    """A loaded bundle on the edge: the student's tails and the teachers, in eval mode."""

    def __init__(
        self,
        bundle: Bundle,
        student: SplitModel,
        teachers: dict[str, nn.Module],
        top_k: int = 5,
    ) -> None:
        self.bundle = bundle
        self.student = student
        self.teachers = teachers
        self.tasks: tuple[Task, ...] = bundle.manifest.tasks
        self.top_k = top_k
        # Tasks whose tail learnt from labels, with no trained teacher behind it: a full frame
        # is answered by the student's own head and that tail (the split path, run here).
        self.label_tasks: tuple[str, ...] = ()
        # A classification read off the detector's answer (largest_object): a full frame's
        # label comes from the edge teacher's detections.
        self.frame_label_from_detections = isinstance(teachers.get("classification"),
                                                      LargestObject)

    @classmethod
    def load(cls, root: Path | str, top_k: int = 5) -> TailRuntime:
        """Validate the bundle (checksums included) and rebuild tails and teachers from tail.pt."""
        return cls.from_bundle(load_bundle(root), top_k)

    @classmethod
    def from_bundle(cls, bundle: Bundle, top_k: int = 5) -> TailRuntime:
        """Tails and teachers of a bundle already loaded (and checksummed) by the caller."""
        path = bundle.path(bundle.manifest.tail_file)
        saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("format") != TAIL_FORMAT:
            raise BundleError(f"{path}: tail format {saved.get('format')}, expected {TAIL_FORMAT}")
        teachers: dict[str, tuple[str, nn.Module]] = {}
        for task, ref in saved["teachers"].items():
            teacher: Any = build_teacher(ref["name"], None, ref["num_classes"])
            if "min_size" in ref:  # a detector trained at another input size than the default
                teacher.transform.min_size = (int(ref["min_size"]),)
                teacher.transform.max_size = int(ref["max_size"])
            teacher.load_state_dict(saved["teacher_weights"][task])
            teachers[task] = (ref["name"], teacher.eval())
        student = build_student(teachers, SplitConfig.from_dict(saved["config"]))
        student.load_state_dict(saved["student"])
        if student.config.latent_channels != bundle.manifest.latent.channels:
            raise BundleError(f"{path} does not match the manifest's latent channels")
        runtime = cls(bundle, student.eval(), {t: m for t, (_, m) in teachers.items()}, top_k)
        runtime.label_tasks = tuple(saved.get("label_tasks", ()))
        return runtime

    def run_latents(
        self,
        latents: Sequence[npt.NDArray[np.float32]],
        input_sizes: Sequence[Size],
        original_sizes: Sequence[Size],
        tasks: Sequence[Task] | None = None,
    ) -> list[Results]:
        """Tails on dequantized latents (C, h, w). `input_sizes`: (h, w) of the image the head saw
        before padding; `original_sizes`: (h, w) of the captured frames."""
        if not len(latents) == len(input_sizes) == len(original_sizes):
            raise ValueError("latents, input_sizes and original_sizes must have one entry each")
        tasks = self._tasks(tasks)
        by_width: dict[int, list[int]] = defaultdict(list)
        for i, latent in enumerate(latents):
            by_width[latent.shape[0]].append(i)
        results: list[Results] = [Results()] * len(latents)
        with torch.inference_mode():
            for indices in by_width.values():
                batch = _pad_stack([torch.from_numpy(np.asarray(latents[i])) for i in indices])
                sizes = [tuple(input_sizes[i]) for i in indices]
                originals = [tuple(original_sizes[i]) for i in indices]
                outputs = run_tails(self.student.tails, batch, sizes, originals, tasks)
                for j, i in enumerate(indices):
                    results[i] = self._result(outputs, j)
        return results

    def run_images(
        self, images: Sequence[npt.NDArray[np.uint8]], tasks: Sequence[Task] | None = None
    ) -> list[Results]:
        """The teachers on whole frames (HxWx3 uint8 RGB): the full-offload path."""
        tasks = self._tasks(tasks)
        tensors = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1) for im in images]
        outputs: dict[str, Any] = {}
        derived = self.frame_label_from_detections
        with torch.inference_mode():
            detections = None
            if "detection" in tasks or ("classification" in tasks and derived):
                # torchvision's own transform: normalize, resize, pad
                detections = self.teachers["detection"]([t.float() / 255 for t in tensors])
            if "detection" in tasks:
                outputs["detection"] = detections
            if "classification" in tasks and derived:  # the frame label off those detections
                outputs["classification"] = self.teachers["classification"](detections)
            elif "classification" in tasks and "classification" in self.label_tasks:
                outputs["classification"] = torch.cat(
                    [self._through_head("classification", t) for t in tensors])
            elif "classification" in tasks:
                outputs["classification"] = torch.cat(
                    [self.teachers["classification"](self._classifier_input(t)) for t in tensors]
                )
        return [self._result(outputs, i) for i in range(len(images))]

    def _through_head(self, task: str, image: torch.Tensor) -> torch.Tensor:
        """`task`'s tail on the student's own head at full width: the manifest's resize, crop and
        padding (as the device's preprocessor), the head, the quantized latent, the tail."""
        x, geometry = self._resized_crop(image)
        pad = self.bundle.manifest.preprocessing.pad_value
        padded = torch.tensor(pad, dtype=torch.float32).view(1, 3, 1, 1).expand(
            1, 3, *geometry.padded).clone()
        padded[:, :, : x.shape[2], : x.shape[3]] = x
        head_input = padded.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        latent = self.student.prior.quantize(self.student.head(head_input)[0])
        out: torch.Tensor = self.student.tails[task](
            latent, [geometry.input_size], [geometry.original])
        return out

    def _resized_crop(self, image: torch.Tensor) -> tuple[torch.Tensor, FrameGeometry]:
        """(1, 3, h, w) float pixels 0–255 after the manifest's resize and crop, and the
        geometry."""
        geometry = frame_geometry((image.shape[1], image.shape[2]),
                                  self.bundle.manifest.preprocessing)
        x = image[None].float()
        if geometry.resized != geometry.original:
            x = F.interpolate(x, size=geometry.resized, mode="bilinear", align_corners=False)
        top, left, height, width = geometry.crop
        return x[:, :, top : top + height, left : left + width], geometry

    def _classifier_input(self, image: torch.Tensor) -> torch.Tensor:
        """The manifest's resize and crop, then ImageNet normalization (as the local graph)."""
        x = self._resized_crop(image)[0] / 255.0
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    def _tasks(self, tasks: Sequence[Task] | None) -> tuple[Task, ...]:
        if not tasks:
            return self.tasks
        unknown = [t for t in tasks if t not in self.tasks]
        if unknown:
            raise BundleError(f"tasks {unknown} are not in this bundle; it has {self.tasks}")
        return tuple(tasks)

    def _result(self, outputs: dict[str, Any], index: int) -> Results:
        detections: tuple[Detection, ...] = ()
        classifications: tuple[Classification, ...] = ()
        if "detection" in outputs:
            found = outputs["detection"][index]
            detections = detections_from_arrays(
                found["boxes"].numpy(), found["scores"].numpy(), found["labels"].numpy()
            )
        if "classification" in outputs:
            probabilities = outputs["classification"][index].softmax(-1)
            k = min(self.top_k, probabilities.numel())
            scores, labels = probabilities.topk(k)
            classifications = tuple(
                Classification(int(label), float(score))
                for label, score in zip(labels.tolist(), scores.tolist(), strict=True)
            )
        return Results(detections, classifications)


def _pad_stack(latents: list[torch.Tensor]) -> torch.Tensor:
    """Zero-pad (C, h, w) latents bottom/right to the largest and stack (torchvision's batching)."""
    height = max(t.shape[1] for t in latents)
    width = max(t.shape[2] for t in latents)
    return torch.stack(
        [F.pad(t, (0, width - t.shape[2], 0, height - t.shape[1])) for t in latents]
    )
