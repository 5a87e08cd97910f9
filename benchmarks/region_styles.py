"""Where the region head fires, style family by style family: the shifted set's bytes taken apart.

    python -m benchmarks.region_styles --bundle bundles/demo-shapes [--frames 100] \
        [--widths 1.0,0.25] [--train-backgrounds] [--probes train shifted ...] [--json out.json]

Renders the probes of `benchmarks.style_shift` (the training styles, the shifted ones, one part
shifted, one held-out background family or fill; with `--train-backgrounds`, also each training
background family alone), `--frames` scenes each with the same seeds, and runs the bundle's head
(ONNX, as the device does) on every scene. Per probe and width it prints the share of region
cells the head keeps at the bundle's own threshold, the share the labelled boxes overlap (what a
perfect head would keep), the head's recall of those cells, and the coded payload (regions
string included, no envelope).

Why it exists: on the shifted test set the head keeps more cells than in distribution, and the
bytes follow. This says on which styles — so a fix can aim at them and be measured on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.latent_bits import HeadPass
from benchmarks.style_shift import PROBE_SALT, probes
from device_client.head import HeadRunner
from device_client.scenes import styles
from device_client.scenes.render import Scene, SceneConfig, render_scene
from shared.codecs import Regions
from split_models.data.coco import Frame


@dataclass(frozen=True)
class RegionRow:
    kept: float  # share of the region cells the head keeps
    boxes: float  # share of the cells a labelled box overlaps
    recall: float | None  # of those cells, the share kept (None: no object in the probe)
    payload_bytes: float  # the coded latent with its regions, per frame


def all_probes(train_backgrounds: bool) -> dict[str, SceneConfig]:
    found = probes()
    if train_backgrounds:
        base = SceneConfig()
        for family in styles.TRAIN.backgrounds:
            found[f"train background {family}"] = dataclasses.replace(
                base, families=dataclasses.replace(styles.TRAIN, backgrounds=(family,)))
    return found


def render(config: SceneConfig, frames: int) -> list[Scene]:
    return [render_scene(np.random.default_rng([0, PROBE_SALT, i]), config)
            for i in range(frames)]


def measure(runner: HeadRunner, scenes: list[Scene], threshold: float | None = None,
            ) -> RegionRow:  # fmt: skip
    """The head at the runner's current width, at `threshold` (default: the bundle's own)."""
    if runner.regions is None:
        raise SystemExit("this bundle has no region head")
    cut = runner.region_thresholds[runner.width] if threshold is None else threshold
    kept = boxes = payload = 0.0
    found = targets = 0
    for scene in scenes:
        corners = np.array([[x, y, x + w, y + h] for x, y, w, h in (o.box for o in scene.objects)],
                           np.float32).reshape(-1, 4)
        head = HeadPass.run(runner, Frame(scene.image, corners, np.zeros(len(corners), np.int64),
                                          0, True))
        assert head.scores is not None
        regions = Regions(head.scores >= cut, runner.regions.cell)
        target = head.box_cells(regions.cells.shape, runner.regions.cell)
        kept += float(regions.cells.mean())
        boxes += float(target.mean())
        found += int((regions.cells & target).sum())
        targets += int(target.sum())
        payload += runner.codec.encode(head.latent, regions).nbytes
    count = max(1, len(scenes))
    return RegionRow(kept / count, boxes / count, found / targets if targets else None,
                     payload / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--widths", default="", help="comma-separated (default: every head)")
    parser.add_argument("--train-backgrounds", action="store_true",
                        help="also probe each training background family alone")
    parser.add_argument("--probes", nargs="*", help="only these probes (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    runner = HeadRunner.load(args.bundle, threads=args.threads)
    widths = [float(w) for w in args.widths.split(",") if w.strip()] or list(runner.widths)
    chosen = {name: config for name, config in all_probes(args.train_backgrounds).items()
              if not args.probes or name in args.probes}
    print("| probe | width | cells kept | boxes' cells | recall | payload B |")
    print("|---|---:|---:|---:|---:|---:|")
    report: dict[str, dict[str, Any]] = {}
    for name, config in chosen.items():
        scenes = render(config, args.frames)
        for width in widths:
            runner.set_width(width)
            row = measure(runner, scenes)
            report.setdefault(name, {})[f"{width:g}"] = dataclasses.asdict(row)
            recall = "—" if row.recall is None else f"{row.recall:.3f}"
            print(f"| {name} | {width:g} | {row.kept:.2f} | {row.boxes:.2f} | {recall} | "
                  f"{row.payload_bytes:.0f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
