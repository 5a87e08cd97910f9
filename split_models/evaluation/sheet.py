"""A contact sheet: frames with their ground truth (thin white) and a model's detections
(coloured by class, score ≥ 0.5), for a reader to see what a model finds and misses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from shared.results import Results
from split_models.data.coco import Frame

_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240))


def detection_sheet(frames: Sequence[Frame], results: Sequence[Results],
                    classes: Sequence[str], path: Path, columns: int = 4,
                    threshold: float = 0.5) -> Path:
    tiles = []
    for frame, result in zip(frames, results, strict=True):
        tile = frame.image.copy()
        for box in frame.boxes:
            x1, y1, x2, y2 = (int(v) for v in box)
            cv2.rectangle(tile, (x1, y1), (x2, y2), (255, 255, 255), 1)
        for detection in result.detections:
            if detection.score < threshold:
                continue
            colour = _COLOURS[detection.label_id % len(_COLOURS)]
            x1, y1, x2, y2 = (int(v) for v in detection.box)
            cv2.rectangle(tile, (x1, y1), (x2, y2), colour, 2)
            name = classes[detection.label_id] if detection.label_id < len(classes) else "?"
            cv2.putText(tile, f"{name} {detection.score:.2f}", (x1 + 2, max(10, y1 - 3)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows)[:, :, ::-1])
    return path
