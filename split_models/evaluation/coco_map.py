"""COCO mAP@[.5:.95] and mAP@.5 with pycocotools, for predictions in original-image pixels.

    scores = coco_map("data/shapes/test.json", [Prediction(image_id, (x1, y1, x2, y2), 0.9, 3)])

`category_id` is the COCO category id (not the contiguous training label).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@dataclass(frozen=True)
class Prediction:
    image_id: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    category_id: int


def load_coco(annotations: Path | str | COCO) -> COCO:
    if isinstance(annotations, COCO):
        return annotations
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return COCO(str(annotations))


def coco_map(annotations: Path | str | COCO, predictions: list[Prediction],
             image_ids: list[int] | None = None) -> dict[str, float]:
    """{"map": mAP@[.5:.95], "map50": mAP@.5} over `image_ids` (default: every image)."""
    gt = load_coco(annotations)
    ids = image_ids if image_ids is not None else sorted(gt.getImgIds())
    if not predictions:
        return {"map": 0.0, "map50": 0.0}
    results = [
        {"image_id": p.image_id, "category_id": p.category_id, "score": p.score,
         "bbox": [p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]]}
        for p in predictions
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        found = gt.loadRes(results)
        evaluation = COCOeval(gt, found, "bbox")
        evaluation.params.imgIds = ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = np.maximum(evaluation.stats[:2], 0.0)  # -1 means "no ground truth": count as 0
    return {"map": float(stats[0]), "map50": float(stats[1])}
