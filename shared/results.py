"""What a model says about a frame, one type each, on both sides of the link.

    Results(detections=(Detection(box, score, label_id, label), ...),
            classifications=(Classification(label_id, score, label), ...))   # top-k, best first
    ServerTimings(queue_wait_ms, decode_ms, tail_ms, total_ms, batch_size)

The edge's tail runtime and the device's local model produce `Results`; the wire layer
(`shared/messages.py`) maps them to and from `pb.InferResponse`; the device's outcomes carry them
as they are. Labels are the manifest's class names, "" where a producer has none (the tail runtime
knows only ids; `Results.labelled` names them). Boxes are x1, y1, x2, y2 in original-image pixels.

Plain dataclasses and numpy: never imports torch, protobuf or either side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.bundle.manifest import Task

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels
TOP_K = 5  # classifications kept per frame, best first


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float
    label_id: int  # index into manifest.classes["detection"] (0 is the background)
    label: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"box": list(self.box), "score": self.score, "label_id": self.label_id,
                "label": self.label}


@dataclass(frozen=True)
class Classification:
    label_id: int
    score: float  # softmax probability
    label: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"label_id": self.label_id, "label": self.label, "score": self.score}


@dataclass(frozen=True)
class ServerTimings:
    """The edge's own stage timings for a frame: the scheduler tells link from load with them."""

    queue_wait_ms: float
    decode_ms: float
    tail_ms: float
    total_ms: float
    batch_size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "queue_wait": round(self.queue_wait_ms, 3),
            "decode": round(self.decode_ms, 3),
            "tail": round(self.tail_ms, 3),
            "total": round(self.total_ms, 3),
            "batch_size": self.batch_size,
        }


@dataclass(frozen=True)
class Results:
    detections: tuple[Detection, ...] = ()
    classifications: tuple[Classification, ...] = ()  # top-k, best first

    def labelled(self, classes: Mapping[Task, Sequence[str]]) -> Results:
        """The same results with each label id named from a manifest's `classes`."""
        detection_names = classes.get("detection", ())
        class_names = classes.get("classification", ())
        return Results(
            tuple(replace(d, label=_name(detection_names, d.label_id)) for d in self.detections),
            tuple(
                replace(c, label=_name(class_names, c.label_id)) for c in self.classifications
            ),
        )


def detections_from_arrays(
    boxes: npt.NDArray[np.floating[Any]],
    scores: npt.NDArray[np.floating[Any]],
    labels: npt.NDArray[np.integer[Any]],
) -> tuple[Detection, ...]:
    """A detector's (N, 4) boxes, (N,) scores and (N,) label ids as Detections."""
    return tuple(
        Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(s), int(label))
        for b, s, label in zip(boxes, scores, labels, strict=True)
    )


def top_k_classes(
    logits: npt.NDArray[np.floating[Any]], k: int = TOP_K
) -> tuple[Classification, ...]:
    """Softmax over a classifier's logits, the k most probable classes, best first."""
    values = np.asarray(logits, dtype=np.float64).reshape(-1)
    probabilities = np.exp(values - values.max())
    probabilities /= probabilities.sum()
    best = np.argsort(-probabilities, kind="stable")[:k]
    return tuple(Classification(int(i), float(probabilities[i])) for i in best)


def largest_object_log_probabilities(
    boxes: npt.NDArray[np.floating[Any]],
    scores: npt.NDArray[np.floating[Any]],
    labels: npt.NDArray[np.integer[Any]],
    num_classes: int,
    min_score: float,
) -> npt.NDArray[np.float64]:
    """The frame label read off a detector's answer, as log-probabilities (num_classes,): the
    class of the largest detection scoring ≥ `min_score` gets its score and "none" (0) the rest;
    with none that confident, "none" gets 1 − the best score and that detection's class the best
    score. The edge's `largest_object` tail (split_models.tails.LargestObject) and the device's
    fallback (`largest_object_label`) both read it here."""
    probabilities = np.full(num_classes, 1e-4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    valid = (labels >= 0) & (labels < num_classes)
    keep = valid & (scores >= min_score)
    if keep.any():
        kept = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[keep]
        areas = (kept[:, 2] - kept[:, 0]) * (kept[:, 3] - kept[:, 1])
        largest = int(areas.argmax())
        score = float(scores[keep][largest])
        probabilities[int(labels[keep][largest])] = score
        probabilities[0] = 1.0 - score
    else:  # nothing confident: "none", with the best guess as the runner-up
        runner_up = 0.0
        if valid.any():
            best = int(scores[valid].argmax())
            runner_up = float(scores[valid][best])
            probabilities[int(labels[valid][best])] = runner_up
        probabilities[0] = 1.0 - runner_up
    logs: npt.NDArray[np.float64] = np.log(np.maximum(probabilities, 1e-6))
    return logs


def largest_object_label(
    boxes: npt.NDArray[np.floating[Any]],
    scores: npt.NDArray[np.floating[Any]],
    labels: npt.NDArray[np.integer[Any]],
    num_classes: int,
    min_score: float,
    k: int = TOP_K,
) -> tuple[Classification, ...]:
    """`largest_object_log_probabilities`' top k, as a classifier's softmax would give them: what
    the edge answers for a `largest_object` task, from the device's own detections."""
    return top_k_classes(
        largest_object_log_probabilities(boxes, scores, labels, num_classes, min_score), k)


def _name(names: Sequence[str], label_id: int) -> str:
    return names[label_id] if 0 <= label_id < len(names) else ""
