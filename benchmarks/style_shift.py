"""What each held-out style costs a detector: the shifted test set taken apart.

    python -m benchmarks.style_shift --detector out/runs/demo-shapes/teacher-det/teacher.pt \
        [--frames 200] [--json out.json]

Renders `--frames` scenes per probe (in memory, the same seeds for every probe): the training
styles, the shifted styles, the training styles with one part shifted (backgrounds, fills or
faces, `styles.mixed`), and the training styles with a single held-out background family or
fill. For each it prints COCO mAP@[.5:.95] and mAP@.5, false detections per empty frame (score
≥ 0.5) and per-class AP, so a gap between the two test sets can be traced to what causes it.
The detector is a `teacher.pt` written by `splitedge train` (the edge teacher or the device's
local model).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from device_client.scenes import styles
from device_client.scenes.render import CLASSES, SceneConfig, render_scene

SCORE = 0.5  # a false detection on an empty frame counts from this score, as in the report


def probes() -> dict[str, SceneConfig]:
    base = SceneConfig()
    found = {"train": base, "shifted": SceneConfig(styles="shifted")}
    for part in styles.SHIFTABLE:
        found[f"shifted {part}"] = dataclasses.replace(base, families=styles.mixed([part]))
    for family in styles.SHIFTED.backgrounds:
        found[f"background {family}"] = dataclasses.replace(base, families=dataclasses.replace(
            styles.TRAIN, backgrounds=(family,), photos=styles.SHIFTED.photos))
    for fill in styles.SHIFTED.fills:
        found[f"fill {fill}"] = dataclasses.replace(base, families=dataclasses.replace(
            styles.TRAIN, fills=(fill,)))
    return found


PROBE_SALT = 77  # every probe draws frame i from seeds (0, PROBE_SALT, i)


def evaluate(detector: torch.nn.Module, config: SceneConfig, frames: int) -> dict[str, Any]:
    images: list[dict[str, Any]] = []
    truth: list[dict[str, Any]] = []
    found: list[dict[str, Any]] = []
    false_on_empty, empty = 0, 0
    for index in range(frames):
        scene = render_scene(np.random.default_rng([0, PROBE_SALT, index]), config)
        images.append({"id": index, "height": config.height, "width": config.width})
        for placed in scene.objects:
            truth.append({"id": len(truth) + 1, "image_id": index, "category_id": placed.label + 1,
                          "bbox": list(placed.box), "area": placed.area, "iscrowd": 0})
        with torch.inference_mode():
            x = torch.from_numpy(scene.image).permute(2, 0, 1).float() / 255
            out = detector([x])[0]
        if not scene.objects:
            empty += 1
            false_on_empty += int((out["scores"] >= SCORE).sum())
        found += detections_as_coco(index, out)
    fd_per_empty = round(false_on_empty / max(empty, 1), 2)
    map_, map50, per_class = coco_scores(images, truth, found)
    return {"map": round(map_, 3), "map50": round(map50, 3), "fd_per_empty": fd_per_empty,
            "per_class": per_class}


def detections_as_coco(image_id: int, out: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """A torchvision detector's answer for one frame as COCO results (xywh boxes)."""
    return [{"image_id": image_id, "category_id": int(label), "score": float(score),
             "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]}
            for box, score, label in zip(out["boxes"].tolist(), out["scores"].tolist(),
                                         out["labels"].tolist(), strict=True)]


def coco_scores(images: list[dict[str, Any]], truth: list[dict[str, Any]],
                found: list[dict[str, Any]]) -> tuple[float, float, dict[str, float | None]]:
    """(mAP@[.5:.95], mAP@.5, AP per class) of COCO results against COCO annotations."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not found:
        return 0.0, 0.0, dict.fromkeys(CLASSES, 0.0)
    dataset = {"images": images, "annotations": truth,
               "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(found), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    precision = evaluation.eval["precision"][:, :, :, 0, 2]  # IoU × recall × class, all areas
    per_class: dict[str, float | None] = {}
    for k, name in enumerate(CLASSES):
        valid = precision[:, :, k][precision[:, :, k] > -1]
        per_class[name] = round(float(valid.mean()), 3) if valid.size else None
    return (max(float(evaluation.stats[0]), 0.0), max(float(evaluation.stats[1]), 0.0),
            per_class)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", type=Path, required=True, help="a teacher.pt")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probes", nargs="*", help="only these probes (default: all)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    from split_models.training.config import TeacherRef
    from split_models.training.teacher import load_teacher

    torch.set_num_threads(args.threads)
    saved = torch.load(args.detector, map_location="cpu", weights_only=True)
    detector, _ = load_teacher(TeacherRef(name=str(saved["name"]), checkpoint=str(args.detector)))
    detector.eval()
    chosen = {name: config for name, config in probes().items()
              if not args.probes or name in args.probes}
    report = {name: evaluate(detector, config, args.frames) for name, config in chosen.items()}
    head = "| probe | mAP | mAP@.5 | FD/empty | " + " | ".join(CLASSES) + " |"
    print(head)
    print("|---" * (4 + len(CLASSES)) + "|")
    for name, row in report.items():
        classes = " | ".join("—" if v is None else f"{v:.2f}" for v in row["per_class"].values())
        print(f"| {name} | {row['map']:.3f} | {row['map50']:.3f} | {row['fd_per_empty']:.2f} | "
              f"{classes} |")
    if "shifted" in report and report.get("train", {}).get("map"):
        print(f"\nshifted ÷ train mAP: {report['shifted']['map'] / report['train']['map']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
