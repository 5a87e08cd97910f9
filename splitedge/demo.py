"""`splitedge demo`: the whole system on one machine, end to end.

Generates a short clip (objects drifting over a panning photo, with an empty stretch), starts a
real edge server and a real device daemon (separate processes, gRPC on loopback, the bundle
downloaded by the device from the edge), follows every frame's outcome as it is written, and
ends with a summary — frames, bytes per frame against JPEG, latency, prefilter skips — and a
sheet of annotated frames. Exits non-zero when any frame lacks exactly one outcome.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from splitedge.process import SplitedgeProcess

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = ROOT / "bundles" / "demo-shapes"
JPEG_QUALITY = 90  # the full-offload baseline the summary compares against


def make_clip(folder: Path, frames: int, seed: int) -> list[Path]:
    """Frames as PNG files: objects, then an empty stretch (nothing to send), then objects."""
    from PIL import Image

    from device_client.scenes.render import MovingScene
    from split_models.data.synthetic import DEFAULT_SCENE, generate_video

    folder.mkdir(parents=True, exist_ok=True)
    empty = max(2, frames // 5)
    busy = frames - empty
    parts = [
        (busy // 2, 3),
        (empty, 0),
        (busy - busy // 2, 3),
    ]
    paths: list[Path] = []

    def save(frame: np.ndarray[Any, Any]) -> None:
        path = folder / f"{len(paths):06d}.png"
        Image.fromarray(frame).save(path)
        paths.append(path)

    for index, (count, objects) in enumerate(parts):
        if objects == 0:
            # the same camera with every object gone: a photo background of another part could
            # hold a face (scikit-image's cameraman), which a face detector rightly reports
            scene = MovingScene(seed, DEFAULT_SCENE, 3)
            for t in range(count):
                save(scene.frame(busy // 2 + t, with_objects=False).image)
            continue
        clip = generate_video(
            folder / f"part{index}.npz", seed=seed + index, frames=count, objects=objects
        )
        with np.load(clip.with_suffix(".npz")) as data:
            for frame in data["frames"]:
                save(frame)
        clip.with_suffix(".npz").unlink()
    return paths


def device_config(
    out: Path, frames_dir: Path, ports: dict[str, Any], model: str, fps: float
) -> Path:
    config = {
        "device_id": "demo-cam",
        "state_dir": str(out / "state"),
        "bundle": {"url": f"http://127.0.0.1:{ports['http_port']}", "name": model},
        "edge": {"target": f"127.0.0.1:{ports['grpc_port']}", "sla_ms": 2000, "window": 4},
        "source": {"kind": "folder", "path": str(frames_dir), "pattern": "*.png", "fps": fps},
        "pipeline": {"threads": 1, "prefilter": {"enabled": True, "gate": True}},
        "sinks": [{"kind": "file", "path": str(out / "outcomes.jsonl")}],
        "metrics": {"enabled": False},
    }
    path = out / "device.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def follow(outcomes: Path, device: SplitedgeProcess, total: int) -> list[dict[str, Any]]:
    """Print each outcome as the daemon writes it, under a progress bar, until the daemon ends."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    console = Console()
    records: list[dict[str, Any]] = []
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("frames", total=total)
        position = 0
        while True:
            finished = not device.running
            if outcomes.exists():
                with outcomes.open() as stream:
                    stream.seek(position)
                    for line in stream:
                        if not line.endswith("\n"):
                            break
                        position += len(line.encode())
                        record = json.loads(line)
                        records.append(record)
                        progress.console.print(describe(record))
                        progress.update(task, completed=len(records))
            if finished:
                return records
            time.sleep(0.05)


def describe(record: dict[str, Any]) -> str:
    found = Counter(d["label"] for d in record["detections"] if d["score"] >= 0.5)
    objects = ", ".join(f"{n}×{label}" for label, n in sorted(found.items())) or "-"
    stages = record["timings_ms"]
    timing = " ".join(
        f"{short} {stages[name]:.0f}"
        for name, short in (
            ("head", "head"),
            ("encode", "enc"),
            ("uplink", "up"),
            ("local", "local"),
            ("total", "total"),
        )
        if name in stages
    )
    kind = record["kind"] if not record.get("reason") else f"{record['kind']}:{record['reason']}"
    # the frame classifier's top-1, from the same upload as the detections
    top = record.get("classifications") or []
    label = f"{top[0]['label']} {top[0]['score']:.2f}" if top else "-"
    return (
        f"#{record['frame_id']:<3d} {kind:<11s} {record.get('branch') or '-':<10s} "
        f"{record['bytes_sent']:>6d}B {objects:<20s} cls {label:<13s} ms {timing}"
    )


def summarize(records: list[dict[str, Any]], paths: list[Path]) -> dict[str, Any]:
    from PIL import Image

    from shared.codecs import CodecId, ImageCodec

    ids = [r["frame_id"] for r in records]
    kinds = Counter(r["kind"] for r in records)
    jpeg = ImageCodec(CodecId.JPEG, quality=JPEG_QUALITY)
    jpeg_bytes = [jpeg.encode(np.array(Image.open(p).convert("RGB"))).nbytes for p in paths]
    sent = [r["bytes_sent"] for r in records if r["kind"] == "edge"]
    totals = [r["timings_ms"]["total"] for r in records if "total" in r["timings_ms"]]
    mean_bytes = float(np.mean([r["bytes_sent"] for r in records])) if records else 0.0
    return {
        "frames": len(paths),
        "outcomes": len(records),
        "every_frame_accounted": sorted(ids) == list(range(len(paths))),
        "by_kind": dict(kinds),
        "prefilter_skips": kinds.get("prefiltered", 0),
        "mean_bytes_per_frame": mean_bytes,
        "mean_bytes_per_sent_frame": float(np.mean(sent)) if sent else 0.0,
        f"jpeg_q{JPEG_QUALITY}_bytes_per_frame": float(np.mean(jpeg_bytes)),
        "jpeg_over_ours": float(np.mean(jpeg_bytes)) / mean_bytes if mean_bytes else None,
        "latency_ms_p50": float(np.percentile(totals, 50)) if totals else None,
        "latency_ms_p99": float(np.percentile(totals, 99)) if totals else None,
    }


def annotate(records: list[dict[str, Any]], paths: list[Path], out: Path, count: int = 6) -> Path:
    """A contact sheet of frames with their boxes drawn (score ≥ 0.5)."""
    from PIL import Image, ImageDraw

    chosen = [r for r in records if r["detections"]][:: max(1, len(records) // (2 * count))]
    chosen = (chosen or records)[:count]
    tiles = []
    for record in chosen:
        image = Image.open(paths[record["frame_id"]]).convert("RGB")
        draw = ImageDraw.Draw(image)
        for d in record["detections"]:
            if d["score"] < 0.5:
                continue
            draw.rectangle(d["box"], outline=(255, 40, 40), width=2)
            draw.text(
                (d["box"][0] + 2, d["box"][1] + 1),
                f"{d['label']} {d['score']:.2f}",
                fill=(255, 255, 0),
            )
        draw.text((4, 4), f"#{record['frame_id']} {record['kind']}", fill=(255, 255, 255))
        tiles.append(image)
    width, height = tiles[0].size
    columns = min(3, len(tiles))
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * width, rows * height))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * width, (i // columns) * height))
    path = out / "annotated.png"
    sheet.save(path)
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="splitedge demo", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--short", action="store_true", help="a 24-frame run (CI)")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    args = parser.parse_args(argv)
    frames = 24 if args.short else args.frames
    out: Path = args.out.resolve()
    if out.exists():
        for name in ("outcomes.jsonl", "annotated.png", "summary.json"):
            (out / name).unlink(missing_ok=True)
        for frame in (out / "frames").glob("*.png"):
            frame.unlink()
    out.mkdir(parents=True, exist_ok=True)

    from shared.bundle import load_bundle

    model = load_bundle(args.bundle).manifest.name
    print(f"splitedge demo: {frames} frames, bundle {args.bundle}, output in {out}")
    paths = make_clip(out / "frames", frames, args.seed)
    edge = SplitedgeProcess(
        [
            "serve",
            "--bundle",
            str(args.bundle.resolve()),
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--max-queue-delay-ms",
            "2",
        ],
        out / "edge.log",
    ).start()
    device = None
    try:
        ports = edge.wait_for("ready")["listening"]
        print(f"edge server ready: gRPC :{ports['grpc_port']}, HTTP :{ports['http_port']}")
        config = device_config(out, out / "frames", ports, model, args.fps)
        device = SplitedgeProcess(
            ["device", "run", "--config", str(config)], out / "device.log"
        ).start()
        records = follow(out / "outcomes.jsonl", device, len(paths))
    finally:
        device_code = device.stop() if device else None
        edge.stop()
    summary = summarize(records, paths)
    summary["device_exit_code"] = device_code
    summary["annotated"] = str(annotate(records, paths, out)) if records else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    ok = summary["every_frame_accounted"] and summary["outcomes"] == frames and device_code == 0
    return 0 if ok else 1


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="splitedge demo summary", show_header=False)
    jpeg_key = f"jpeg_q{JPEG_QUALITY}_bytes_per_frame"
    rows = [
        ("frames / outcomes", f"{summary['frames']} / {summary['outcomes']}"),
        ("every frame accounted", str(summary["every_frame_accounted"])),
        ("outcomes by kind", ", ".join(f"{k}: {v}" for k, v in summary["by_kind"].items())),
        ("prefilter skips", str(summary["prefilter_skips"])),
        ("mean bytes / frame (all frames)", f"{summary['mean_bytes_per_frame']:.0f}"),
        ("mean bytes / frame sent to the edge", f"{summary['mean_bytes_per_sent_frame']:.0f}"),
        (f"JPEG q{JPEG_QUALITY} bytes / frame", f"{summary[jpeg_key]:.0f}"),
        ("JPEG / splitedge bytes", f"{summary['jpeg_over_ours'] or 0:.1f}×"),
        (
            "latency p50 / p99 (ms)",
            f"{summary['latency_ms_p50'] or 0:.1f} / {summary['latency_ms_p99'] or 0:.1f}",
        ),
        ("annotated frames", str(summary["annotated"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
