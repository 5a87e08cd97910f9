"""Where a bundle's latent spends its bits: on the objects, or on the background around them.

    python -m benchmarks.latent_bits --bundle bundles/demo-shapes --data out/data/shapes/test.json

Every frame goes the device's way (preprocess, head ONNX, quantize); each latent position's cost
is its symbols' information content under the bundle's factorized prior (what the ANS coder
writes, to within its flush words; an escaped symbol costs its overflow entry). A position is an
object's when it overlaps a labelled box grown by a quarter of its size (at least 8 px a side),
the margin `student.background_weight` trains with. Prints, per width, bytes per frame on objects
and on background, their positions and bits per position, and the coded payload for comparison
(every position coded: a bundle with regions of interest sends less, see `benchmarks.regions`).

Why it exists: the factorized prior codes every position alike, so a latent that keeps background
texture pays for it on every frame (bundle v5: ~70 % of the bytes are background, at almost the
bits per position of the objects). Torch-free: it runs on a device install too.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from device_client.head import HeadRunner
from split_models.data.coco import CocoFrames, Frame

MARGIN, MIN_MARGIN = 0.25, 8.0  # as student.object_margin and position_weights
ESCAPE_BITS = 16.0  # an escaped symbol: its overflow entry, at least


def position_bits(pmfs: Sequence[npt.NDArray[np.float64]], offsets: npt.NDArray[np.int32],
                  symbols: npt.NDArray[np.int32]) -> npt.NDArray[np.float64]:
    """(H, W) bits of each position's symbols under the prior (channels summed): per channel,
    its pmf over symbol - offset (the codec tables' `pmfs()` and `offset`)."""
    bits = np.zeros(symbols.shape[1:])
    for channel in range(symbols.shape[0]):
        pmf = pmfs[channel]
        index = symbols[channel] - offsets[channel]
        inside = (index >= 0) & (index < len(pmf))
        p = pmf[np.clip(index, 0, len(pmf) - 1)]
        bits += np.where(inside, -np.log2(np.maximum(p, 1e-12)), ESCAPE_BITS)
    return bits


def object_positions(frame: Frame, shape: tuple[int, int], stride: int,
                     scale: tuple[float, float], margin: float = MARGIN,
                     least: float = MIN_MARGIN) -> npt.NDArray[np.bool_]:
    """(H, W) True where a cell of `stride` px overlaps a labelled box grown by `margin` of its
    size (at least `least` px a side)."""
    mask = np.zeros(shape, bool)
    scale_y, scale_x = scale
    for x0, y0, x1, y1 in frame.boxes:
        x0, x1, y0, y1 = x0 * scale_x, x1 * scale_x, y0 * scale_y, y1 * scale_y
        grow_x = max(least, margin * (x1 - x0))
        grow_y = max(least, margin * (y1 - y0))
        mask[max(0, int((y0 - grow_y) // stride)):max(0, int((y1 + grow_y) // stride) + 1),
             max(0, int((x0 - grow_x) // stride)):max(0, int((x1 + grow_x) // stride) + 1)] = True
    return mask


@dataclass(frozen=True)
class HeadPass:
    """One frame through the device's head at the runner's width: what a region mask is cut from
    and checked against."""

    frame: Frame
    latent: npt.NDArray[np.float32]  # (C, H, W)
    scores: npt.NDArray[np.float32] | None  # the region head's P(object) per cell, if it has one
    input_size: tuple[int, int]
    original: tuple[int, int]
    stride: int  # input pixels per latent position
    scale: tuple[float, float]  # resized ÷ original, (y, x): the labelled boxes into input pixels

    @classmethod
    def run(cls, runner: HeadRunner, frame: Frame) -> HeadPass:
        head_input = runner.preprocess(frame.image)
        outputs = runner.sessions[runner.width].run(None, {"image": head_input.image})
        geometry = head_input.geometry
        latent = outputs[0][0]
        return cls(frame, latent, outputs[2][0, 0] if runner.regions is not None else None,
                   geometry.input_size, geometry.original, geometry.padded[0] // latent.shape[1],
                   (geometry.resized[0] / geometry.original[0],
                    geometry.resized[1] / geometry.original[1]))

    def box_cells(self, grid: tuple[int, ...], cell: int, margin: float = 0.0,
                  least: float = 0.0) -> npt.NDArray[np.bool_]:
        """(rows, cols) True where a cell of `cell` latent positions overlaps a labelled box
        (grown by `margin` of its size, at least `least` px)."""
        rows, cols = grid
        return object_positions(self.frame, (rows, cols), cell * self.stride, self.scale, margin,
                                least)


def bits_by_region(bundle: Path, data: Path, frames: int) -> list[dict[str, Any]]:
    runner = HeadRunner.load(bundle, threads=1)
    coco = CocoFrames(data)
    count = min(frames, len(coco))
    tables = runner.codec.tables
    pmfs, offsets = tables.pmfs(), tables.offset  # once: the prior is the same for every frame
    rows = []
    for width in runner.widths:
        runner.set_width(width)
        bits = {"objects": 0.0, "background": 0.0}
        positions = {"objects": 0, "background": 0}
        payload = 0
        for index in range(count):
            frame = coco[index]
            output = runner.run(frame.image)
            assert output.latent is not None and output.payload is not None
            latent = output.latent[0] if output.latent.ndim == 4 else output.latent
            symbols = runner.codec.quantize(latent)
            geometry = output.head_input.geometry
            stride = geometry.padded[0] // symbols.shape[1]
            scale = (geometry.resized[0] / geometry.original[0],
                     geometry.resized[1] / geometry.original[1])
            on_objects = object_positions(frame, (symbols.shape[1], symbols.shape[2]), stride,
                                          scale)
            cost = position_bits(pmfs, offsets, symbols)
            for region, where in (("objects", on_objects), ("background", ~on_objects)):
                bits[region] += float(cost[where].sum())
                positions[region] += int(where.sum())
            payload += runner.codec.encode(latent).nbytes  # every position, as the bits are
        row: dict[str, Any] = {"width": width, "frames": count,
                               "payload_bytes": payload / count}
        for region in bits:
            row[f"{region}_bytes"] = bits[region] / 8 / count
            row[f"{region}_positions"] = positions[region] / count
            row[f"{region}_bits_per_position"] = bits[region] / max(1, positions[region])
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, action="append", required=True,
                        help="repeatable: a bundle directory")
    parser.add_argument("--data", type=Path, required=True, help="a COCO .json test set")
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    report = {}
    for bundle in args.bundle:
        rows = bits_by_region(bundle, args.data, args.frames)
        report[str(bundle)] = rows
        for row in rows:
            share = row["background_bytes"] / max(
                1e-9, row["background_bytes"] + row["objects_bytes"])
            print(f"{bundle} w={row['width']:g}: objects {row['objects_bytes']:.0f} B "
                  f"({row['objects_positions']:.0f} positions, "
                  f"{row['objects_bits_per_position']:.2f} bit each), background "
                  f"{row['background_bytes']:.0f} B ({row['background_positions']:.0f}, "
                  f"{row['background_bits_per_position']:.2f} bit each; {share:.0%} of the "
                  f"bits), coded payload {row['payload_bytes']:.0f} B", flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
