"""Regions of interest: bytes against accuracy as the device codes fewer of the latent's cells.

    python -m benchmarks.regions --bundle B --data out/data/shapes/test.json \
        [--thresholds 0.06,0.1,0.2] [--widths 1.0] [--oracle-margin 0.25 --oracle-margin 0] \
        [--caps 0.5,0.4]

Every frame goes the device's way (preprocess, head ONNX once) and the edge's (decode, the real
tail); per width it prints, for all positions coded, the bundle's own region threshold and each
of `--thresholds`, the cells kept, the coded payload (regions string included), mAP / mAP@.5 /
false detections per empty frame, and for a region head its recall of the cells the labelled
boxes overlap (the target it was trained and calibrated for). `--thresholds` needs a bundle
with a region head; `--oracle-margin` takes the mask from the labelled boxes instead (grown by
that share of their size; at least 8 px when > 0, as `benchmarks.latent_bits` grows them):
what a perfect region head would buy, on any bundle. `--caps` keeps, on top of the bundle's
threshold, at most that share of a frame's cells (its highest-scoring): what bounding a busy
frame's bytes costs (rate.md: the clutter outscores the objects, so it drops objects first).

Why it exists: the background costs ~70 % of the bytes (`benchmarks.latent_bits`), and the
tails do not need it; how much of that a region head can drop is this table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.latent_bits import MIN_MARGIN, HeadPass
from device_client.head import HeadRunner
from shared.codecs import Regions
from split_models.data.coco import CocoFrames
from split_models.evaluation.report import _Scorer
from split_models.runtime import TailRuntime

ORACLE_CELL = 4  # latent positions a side, as the recipe's region head would mark them


def sweep(bundle: Path, data: Path, frames: int, widths: list[float] | None,
          thresholds: list[float], oracle_margins: list[float],
          caps: list[float] | None = None) -> list[dict[str, Any]]:
    runner = HeadRunner.load(bundle, threads=2)
    if thresholds and runner.regions is None:
        raise SystemExit(f"{bundle} has no region head: use --oracle-margin only")
    runtime = TailRuntime.load(bundle)
    coco = CocoFrames(data)
    count = min(frames, len(coco))
    chosen = [coco[i] for i in range(count)]
    scorer = _Scorer(data, coco, count)
    rows = []
    for width in widths or list(runner.widths):
        runner.set_width(width)
        heads = [HeadPass.run(runner, frame) for frame in chosen]
        settings: list[tuple[str, float | None]] = [("all positions", None)]
        if runner.regions is not None:
            settings.append(("region head", runner.region_thresholds[runner.width]))
        settings += [("region head", t) for t in thresholds]
        if runner.regions is not None:  # the bundle's threshold, then only the top cells
            settings += [("capped", c) for c in caps or []]
        settings += [("labelled boxes", m) for m in oracle_margins]
        for mode, value in settings:
            latents, inputs, originals, payload, kept = [], [], [], 0, 0.0
            found_cells, target_cells = 0, 0
            for head in heads:
                height, width_ = head.latent.shape[1:]
                regions = None
                if mode in ("region head", "capped"):
                    assert runner.regions is not None and head.scores is not None
                    assert value is not None
                    threshold = value if mode == "region head" else \
                        runner.region_thresholds[runner.width]
                    keep = head.scores >= threshold
                    if mode == "capped":
                        keep &= head.scores >= cap_threshold(head.scores, value)
                    regions = Regions(keep, runner.regions.cell)
                    target = head.box_cells(regions.cells.shape, runner.regions.cell)
                    found_cells += int((regions.cells & target).sum())
                    target_cells += int(target.sum())
                elif mode == "labelled boxes":
                    assert value is not None
                    grid = (-(-height // ORACLE_CELL), -(-width_ // ORACLE_CELL))
                    least = MIN_MARGIN if value > 0 else 0.0
                    regions = Regions(head.box_cells(grid, ORACLE_CELL, value, least),
                                      ORACLE_CELL)
                coded = runner.codec.encode(head.latent, regions)
                payload += coded.nbytes
                kept += 1.0 if regions is None else float(regions.cells.mean())
                latents.append(runner.codec.decode(coded))
                inputs.append(head.input_size)
                originals.append(head.original)
            found, found50, _, false = scorer.score(
                runtime.run_latents(latents, inputs, originals))
            recall = found_cells / target_cells if target_cells else None
            rows.append({"width": width, "mode": mode, "value": value, "kept": kept / count,
                         "payload_bytes": payload / count, "map": found, "map50": found50,
                         "false_per_empty": false, "cell_recall": recall})
            of_boxes = "" if recall is None else f" (the boxes' cells: {recall:.3f})"
            print(f"w={width:g} {mode}{'' if value is None else f' {value:g}'}: kept "
                  f"{kept / count:.2f}{of_boxes}, payload {payload / count:.0f} B, "
                  f"mAP {found:.3f} / {found50:.3f}, false per empty frame {false:.2f}",
                  flush=True)
    return rows


def cap_threshold(scores: npt.NDArray[np.float32], share: float) -> float:
    """The score of the cell ranked ceil(share × cells): at most that many cells reach it
    (ties aside)."""
    ranked = np.sort(scores.ravel())[::-1]
    return float(ranked[max(1, int(np.ceil(share * ranked.size))) - 1])


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="a COCO .json test set")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--widths", type=_floats, default=None, help="default: every width")
    parser.add_argument("--thresholds", type=_floats, default=[],
                        help="region head thresholds (the bundle needs a region head)")
    parser.add_argument("--oracle-margin", type=float, action="append", default=[],
                        help="repeatable: mask from the labelled boxes grown by this share")
    parser.add_argument("--caps", type=_floats, default=[],
                        help="the bundle's threshold, and at most this share of the cells "
                             "(the highest-scoring)")
    args = parser.parse_args()
    sweep(args.bundle, args.data, args.frames, args.widths, args.thresholds, args.oracle_margin,
          args.caps)


if __name__ == "__main__":
    main()
