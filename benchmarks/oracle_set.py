"""An oracle's training set: training-style and held-out-style frames in one COCO file.

    python -m splitedge dataset generate --out out/data/shifted-train --styles shifted \
        --train 4000 --val 0 --test 0 --workers 2
    python -m benchmarks.oracle_set --out out/data/oracle-train.json \
        out/data/shapes/train.json:4000 out/data/shifted-train/train.json:4000
    python -m splitedge train configs/demo-shapes/teacher-det.yaml \
        --set out=out/runs/exp/teacher-oracle --set data.train=out/data/oracle-train.json

Each `SOURCE:N` adds the first N frames of a COCO file (all of them without `:N`); image paths
are rewritten relative to the output file's folder, so any COCO reader (and `splitedge train`)
finds them. The held-out styles' training frames come from the `train` split's seeds, not the
shifted test set's, so no test frame is trained on.

Why it exists: a teacher trained on both style sets, for the same steps, is what the recipe's
teacher could at best reach on the shifted set. Its shifted ÷ in-distribution mAP is the part of
the gap that is the shifted set's own difficulty (busier backgrounds, harder renderings), not a
failure to generalize (`reports/demo-shapes/style_shift.md`, "An oracle").
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def merge(out: Path, sources: list[tuple[Path, int | None]]) -> dict[str, Any]:
    """Write the merged COCO file to `out`; return it. Ids are renumbered; categories must agree."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    categories: list[dict[str, Any]] | None = None
    parts = []
    for path, count in sources:
        coco = json.loads(path.read_text())
        if categories is None:
            categories = coco["categories"]
        elif coco["categories"] != categories:
            raise ValueError(f"{path}: its categories differ from the first source's")
        root = os.path.relpath(path.parent, out.parent)
        chosen = coco["images"] if count is None else coco["images"][:count]
        if count is not None and len(chosen) < count:
            raise ValueError(f"{path} has {len(chosen)} frames, {count} asked")
        new_id = {}
        for image in chosen:
            new_id[image["id"]] = len(images) + 1
            images.append({**image, "id": len(images) + 1,
                           "file_name": os.path.join(root, image["file_name"])})
        for annotation in coco["annotations"]:
            if annotation["image_id"] in new_id:
                annotations.append({**annotation, "id": len(annotations) + 1,
                                    "image_id": new_id[annotation["image_id"]]})
        parts.append(f"{len(chosen)} of {path}")
    merged = {"info": {"description": "merged: " + "; ".join(parts)}, "images": images,
              "annotations": annotations, "categories": categories or []}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged))
    return merged


def _source(text: str) -> tuple[Path, int | None]:
    path, colon, count = text.rpartition(":")
    if colon and count.isdigit():
        return Path(path), int(count)
    return Path(text), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("sources", nargs="+", type=_source, help="COCO.json[:first N frames]")
    args = parser.parse_args()
    merged = merge(args.out, args.sources)
    print(f"{args.out}: {len(merged['images'])} frames, {len(merged['annotations'])} objects "
          f"({merged['info']['description']})")


if __name__ == "__main__":
    main()
