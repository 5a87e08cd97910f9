"""How much of a detector's shifted-set gap is clusters of one class repeated across a frame.

    python -m benchmarks.repeated_detections --detector out/runs/exp/v9-teacher/teacher.pt \
        [--data out/data/shapes/test.json --data out/data/shapes-shifted/test.json] \
        [--train out/data/shapes/train.json] [--limits 4 6]

A checkerboard is a grid of squares, and the teacher reads its tiles as squares: many
detections of one class in one frame. This scores each test set as the detector answers, then
with a diagnostic rule applied after the fact: where more than `limit` detections of a class
score ≥ `--counted` in one frame, that class's detections there are scaled by `--factor`. The
training set's largest count of one class in a frame is printed beside it, the least limit that
never suppresses a labelled frame of the training styles. A diagnostic, not a filter the edge
runs: the bound is the generator's (at most six objects a frame), which a camera's scene does
not keep (a shelf of cans, a car park).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.style_shift import SCORE, coco_scores, detections_as_coco

Detection = dict[str, Any]


def suppress_repeats(found: list[Detection], limit: int, counted: float = 0.3,
                     factor: float = 0.2) -> list[Detection]:
    """`found` (COCO results) with each (frame, class) that has more than `limit` detections
    scoring ≥ `counted` scaled by `factor`; the others as they were."""
    groups: dict[tuple[int, int], list[Detection]] = defaultdict(list)
    for detection in found:
        groups[(detection["image_id"], detection["category_id"])].append(detection)
    out = []
    for group in groups.values():
        repeated = sum(d["score"] >= counted for d in group) > limit
        out += [{**d, "score": d["score"] * factor} if repeated else d for d in group]
    return out


def most_of_one_class(annotations: list[dict[str, Any]]) -> int:
    """The largest number of labelled objects of one class in one frame."""
    counts = Counter((a["image_id"], a["category_id"]) for a in annotations)
    return max(counts.values(), default=0)


def false_per_empty(found: list[Detection], empty: set[int], score: float = SCORE) -> float:
    return sum(d["image_id"] in empty and d["score"] >= score for d in found) / max(len(empty), 1)


def answers(detector: torch.nn.Module, path: Path) -> tuple[dict[str, Any], list[Detection]]:
    from split_models.data.coco import open_frames

    coco = json.loads(path.read_text())
    frames = open_frames(str(path))
    found: list[Detection] = []
    for index in range(len(frames)):
        frame = frames[index]
        with torch.inference_mode():
            x = torch.from_numpy(frame.image).permute(2, 0, 1).float() / 255
            found += detections_as_coco(int(frame.image_id), detector([x])[0])
    return coco, found


def score(coco: dict[str, Any], found: list[Detection]) -> dict[str, Any]:
    images = [{"id": i["id"], "height": i["height"], "width": i["width"]} for i in coco["images"]]
    truth = [{**a, "iscrowd": 0} for a in coco["annotations"]]
    empty = {i["id"] for i in images} - {a["image_id"] for a in truth}
    map_, map50, per_class = coco_scores(images, truth, found)
    return {"map": round(map_, 3), "map50": round(map50, 3),
            "fd_per_empty": round(false_per_empty(found, empty), 2), "per_class": per_class}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", type=Path, required=True, help="a teacher.pt")
    parser.add_argument("--data", type=Path, action="append",
                        help="COCO test sets (default: the benchmark's two)")
    parser.add_argument("--train", type=Path, default=Path("out/data/shapes/train.json"))
    parser.add_argument("--limits", type=int, nargs="+", default=[4, 6])
    parser.add_argument("--counted", type=float, default=0.3)
    parser.add_argument("--factor", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from split_models.training.config import TeacherRef
    from split_models.training.teacher import load_teacher

    torch.set_num_threads(args.threads)
    saved = torch.load(args.detector, map_location="cpu", weights_only=True)
    detector, _ = load_teacher(TeacherRef(name=str(saved["name"]), checkpoint=str(args.detector)))
    detector.eval()
    if args.train.exists():
        train = json.loads(args.train.read_text())["annotations"]
        print(f"training set: at most {most_of_one_class(train)} objects of one class a frame")
    sets = args.data or [Path("out/data/shapes/test.json"),
                         Path("out/data/shapes-shifted/test.json")]
    print("| set | rule | mAP | mAP@.5 | FD/empty | AP circle / square / triangle / star / face |")
    print("|---|---|---:|---:|---:|---|")
    for path in sets:
        coco, found = answers(detector, path)
        rules = {"as answered": found}
        rules |= {f"> {k} of a class suppressed": suppress_repeats(found, k, args.counted,
                                                                    args.factor)
                  for k in args.limits}
        for rule, detections in rules.items():
            row = score(coco, detections)
            classes = " / ".join("—" if v is None else f"{v:.3f}"
                                 for v in row["per_class"].values())
            print(f"| {path.parent.name}/{path.stem} | {rule} | {row['map']:.3f} | "
                  f"{row['map50']:.3f} | {row['fd_per_empty']:.2f} | {classes} |")


if __name__ == "__main__":
    main()
