"""How much accuracy frame sampling keeps: the scheduler's `interval_accuracy`, measured.

    python -m benchmarks.tracking [--clips 4 --frames 90 --intervals 1 2 3 5 8]

On annotated generated clips (objects drifting and turning over panning photos, the benchmark's
own generator), detect every k-th frame and track the boxes on the frames between with the
device's `BoxTracker`; the detections are the ground truth itself (an oracle detector), so what
is lost is what sampling and tracking lose. For each k it prints COCO mAP@[.5:.95] over all
frames and its share of the k = 1 mAP — the figure `pipeline.scheduler.interval_accuracy`
multiplies a branch's accuracy by. Also the tracker's ms per frame. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.scheduler import coco_map
from device_client.tracker import BoxTracker
from shared.results import Detection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--intervals", type=int, nargs="+", default=[1, 2, 3, 5, 8])
    args = parser.parse_args()
    from split_models.data.synthetic import CLASSES, generate_video

    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in range(args.clips):
            path = generate_video(Path(tmp) / f"clip{c}.npz", seed=500 + c, frames=args.frames)
            with np.load(path) as data:
                clips.append((data["frames"], data["boxes"], data["labels"]))
    images, truth = [], []
    for c, (frames, boxes, labels) in enumerate(clips):
        for t in range(len(frames)):
            image_id = c * args.frames + t
            images.append({"id": image_id, "width": frames.shape[2], "height": frames.shape[1]})
            for box, label in zip(boxes[t], labels, strict=True):
                if not np.isnan(box).any():
                    truth.append({"id": len(truth) + 1, "image_id": image_id,
                                  "category_id": int(label),
                                  "bbox": [float(v) for v in box],
                                  "area": float(box[2] * box[3]), "iscrowd": 0})
    dataset = {"images": images, "annotations": truth,
               "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}
    results: dict[str, Any] = {}
    track_ms: list[float] = []
    for k in args.intervals:
        detections = []
        for c, (frames, boxes, labels) in enumerate(clips):
            tracker = BoxTracker()
            for t, frame in enumerate(frames):
                image_id = c * args.frames + t
                tracker.remember(image_id, frame)
                if t % k == 0:
                    found = tuple(
                        Detection((float(b[0]), float(b[1]), float(b[0] + b[2]),
                                   float(b[1] + b[3])), 1.0, int(label), "")
                        for b, label in zip(boxes[t], labels, strict=True)
                        if not np.isnan(b).any()
                    )
                    tracker.seed(image_id, found)
                else:
                    start = time.perf_counter()
                    found = tracker.track(image_id) or ()
                    track_ms.append((time.perf_counter() - start) * 1e3)
                for d in found:
                    x1, y1, x2, y2 = d.box
                    detections.append({"image_id": image_id, "category_id": d.label_id,
                                       "bbox": [x1, y1, x2 - x1, y2 - y1], "score": d.score})
        results[str(k)] = {"map": round(coco_map(dataset, detections), 4)}
    base = results[str(args.intervals[0])]["map"] or 1.0
    for row in results.values():
        row["share_of_k1"] = round(row["map"] / base, 3)
    print(json.dumps({
        "clips": args.clips,
        "frames_per_clip": args.frames,
        "intervals": results,
        "track_ms_p50": round(statistics.median(track_ms), 2) if track_ms else None,
        "interval_accuracy": [results[str(k)]["share_of_k1"] for k in args.intervals],
    }, indent=2))


if __name__ == "__main__":
    main()
