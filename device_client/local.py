"""On-device fallback: the whole teacher from the bundle's `local_files`, no edge involved.

Detection (`local.onnx`): the original frame in (H, W, 3 uint8 RGB) — torchvision's own transform
is inside the graph — and boxes (x1, y1, x2, y2 in original pixels), scores, labels out.
Classification: the preprocessed head input in (1, H, W, 3 uint8), logits out.

`run` is the fallback's one call: the tasks asked for, decoded to `shared.results.Results` (class
names, softmax top-k) so nothing downstream knows the graphs' raw outputs. A task the manifest
derives from another (`derived`: the frame label as the largest detection's class) is read off
local.onnx's detections by the same rule as the edge's tail, so a fallback frame carries it
too. `detect` / `classify` are the raw graphs, for tools that time or compare them.

Never imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from device_client.head import CPU_ONLY, make_session
from device_client.preprocess import Image, Preprocessor
from shared.bundle import Bundle, Task, load_bundle
from shared.errors import BundleError
from shared.results import (
    Classification,
    Detection,
    Results,
    detections_from_arrays,
    largest_object_label,
    top_k_classes,
)


@dataclass(frozen=True)
class LocalDetections:
    boxes: npt.NDArray[np.float32]  # (N, 4) original pixels
    scores: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]


class LocalRunner:
    """The bundle's full models, one session per task, built once."""

    def __init__(
        self, bundle: Bundle, threads: int | None = None, providers: Sequence[str] = CPU_ONLY
    ) -> None:
        self.bundle = bundle
        self.preprocess = Preprocessor(bundle.manifest.preprocessing)
        self.sessions = {
            task: make_session(bundle.path(name), threads, providers)
            for task, name in bundle.manifest.local_files.items()
        }
        # the frame label read off local.onnx's detections (manifest `derived`), when the bundle
        # has no local classifier: decided once, not per frame
        derived = bundle.manifest.derived.get("classification")
        self.label_rule = (
            derived if derived is not None and derived.source in self.sessions
            and "classification" not in self.sessions else None)
        self.label_classes = len(bundle.manifest.classes.get("classification", ()))

    @classmethod
    def load(cls, root: Path | str, threads: int | None = None) -> LocalRunner:
        return cls(load_bundle(root), threads)

    def warm_up(self, height: int = 240, width: int = 320) -> float:
        """Every model once (see HeadRunner.warm_up); returns the ms of a second run."""
        frame = np.zeros((height, width, 3), np.uint8)

        def run() -> None:
            if "detection" in self.sessions:
                self.detect(frame)
            if "classification" in self.sessions:
                self.classify(frame)

        run()
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) * 1e3

    def run(self, frame: Image, tasks: Iterable[Task]) -> Results:
        """The bundle's full models on an HxWx3 uint8 RGB frame, for each of `tasks` this bundle
        has a local model or a derived rule for; labels named from the manifest."""
        wanted = set(tasks)
        detections: tuple[Detection, ...] = ()
        classifications: tuple[Classification, ...] = ()
        rule = self.label_rule if "classification" in wanted else None
        found = None
        if ("detection" in wanted or rule is not None) and "detection" in self.sessions:
            found = self.detect(frame)
        if found is not None and "detection" in wanted:
            detections = detections_from_arrays(found.boxes, found.scores, found.labels)
        if "classification" in wanted and "classification" in self.sessions:
            classifications = top_k_classes(self.classify(frame))
        elif rule is not None and found is not None:
            classifications = largest_object_label(
                found.boxes, found.scores, found.labels, self.label_classes, rule.min_score)
        return Results(detections, classifications).labelled(self.bundle.manifest.classes)

    def _session(self, task: Task) -> ort.InferenceSession:
        if task not in self.sessions:
            raise BundleError(f"no local model for {task}; this bundle has {list(self.sessions)}")
        return self.sessions[task]

    def detect(self, frame: Image) -> LocalDetections:
        """`frame`: HxWx3 uint8 RGB, as captured."""
        boxes, scores, labels = self._session("detection").run(None, {"image": frame})
        return LocalDetections(boxes, scores, labels)

    def classify(self, frame: Image) -> npt.NDArray[np.float32]:
        """Logits (classes,) for an HxWx3 uint8 RGB frame."""
        (logits,) = self._session("classification").run(
            None, {"image": self.preprocess(frame).image}
        )
        return np.asarray(logits[0], dtype=np.float32)
