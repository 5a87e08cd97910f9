"""The rate–accuracy report: bundles (every width; one bundle per λ) against full-frame offload.

    splitedge eval --bundle bundles/demo-shapes --data out/data/shapes/test.json --out reports/demo

For each split branch every test frame goes the device's real way — `HeadRunner.run` (preprocess,
head ONNX, quantize, rANS encode) — and the bytes counted are those of the gRPC request that would
carry it (`InferRequest` protobuf with its headers: ids, model, branch, sizes, timestamps, + the
5-byte gRPC length prefix and the 9-byte HTTP/2 DATA frame header), then the latent is decoded
and the edge's `TailRuntime` runs the tails. Baselines in the same run: the teacher on the raw
frame, on JPEG and WebP at a quality sweep (same request framing, `EncodedImage` payload), and the
local full model's latency. Writes report.json, report.md and rate_accuracy.png; fills the first
bundle's branch `accuracy` (mAP@[.5:.95] on this data) unless told not to.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from device_client.head import HeadRunner
from device_client.local import LocalRunner
from shared.bundle import load_bundle, write_manifest
from shared.codecs import CodecId, make_codec
from shared.messages import image_size, latent_message
from shared.wire import pb
from split_models.data.coco import CocoFrames, Frame, frame_label
from split_models.evaluation.coco_map import Prediction, coco_map, load_coco
from split_models.runtime import TailResult, TailRuntime

GRPC_PREFIX = 5  # compressed flag + 4-byte length
HTTP2_DATA_HEADER = 9
_CHUNK = 8


@dataclass
class Row:
    method: str  # "split" | "split+gate" | "raw" | "jpeg" | "webp"
    setting: str
    kb_per_frame: float  # mean wire bytes / 1000
    map: float
    map50: float
    top1: float | None = None
    device_ms: float | None = None  # median per frame on the device side (head or encoder)
    bundle: str | None = None
    width: float | None = None
    rate_lambda: float | None = None
    quality: int | None = None
    extra: dict[str, float] = field(default_factory=dict)


def wire_bytes(request: pb.InferRequest) -> int:
    return request.ByteSize() + GRPC_PREFIX + HTTP2_DATA_HEADER


def _request(name: str, version: str, branch: str, frame_id: int, original: tuple[int, int],
             **payload: Any) -> pb.InferRequest:
    now = time.time_ns()
    return pb.InferRequest(
        stream_id="camera-0", frame_id=frame_id, model_name=name, model_version=version,
        branch_id=branch, original_size=image_size(original), capture_time_unix_ns=now,
        deadline_unix_ns=now + 200_000_000, **payload,
    )


class _Scorer:
    """Predictions → mAP and top-1 over the evaluated frames."""

    def __init__(self, data: Path, frames: CocoFrames, count: int) -> None:
        self.gt = load_coco(data)
        self.frames = frames
        self.ids = [frames.images[i]["id"] for i in range(count)]
        self.labels = [frame_label(frames[i]) for i in range(count)]

    def score(self, results: Sequence[TailResult], skipped: Sequence[bool] | None = None
              ) -> tuple[float, float, float | None]:
        predictions, correct, classified = [], 0, 0
        for k, result in enumerate(results):
            if skipped is not None and skipped[k]:
                continue
            for detection in result.detections:
                if 1 <= detection.label_id <= len(self.frames.category_ids):
                    predictions.append(Prediction(
                        self.ids[k], detection.box, detection.score,
                        self.frames.category_ids[detection.label_id - 1]))
            if result.classifications:
                classified += 1
                correct += int(result.classifications[0].label_id == self.labels[k])
        found = coco_map(self.gt, predictions, self.ids)
        top1 = correct / len(results) if classified else None
        return found["map"], found["map50"], top1


def run_report(bundles: Sequence[Path], data: Path, out: Path, *, limit: int | None = None,
               qualities: Sequence[int] = (5, 10, 20, 30, 50, 70, 90), fill: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    frames = CocoFrames(data)
    count = min(len(frames), limit or len(frames))
    images: list[Frame] = [frames[i] for i in range(count)]
    scorer = _Scorer(data, frames, count)
    rows: list[Row] = []
    prefilter: dict[str, Any] = {}
    with Progress() as progress:
        for index, root in enumerate(bundles):
            rows += _split_rows(root, images, scorer, progress, prefilter if index == 0 else None)
        rows += _baseline_rows(bundles[0], images, scorer, qualities, progress)
    local_ms = _local_ms(bundles[0], images)
    summary = _summary(rows, prefilter, local_ms)
    report = {"data": str(data), "frames": count, "bundles": [str(b) for b in bundles],
              "rows": [asdict(r) for r in rows], "prefilter": prefilter,
              "local_ms": local_ms, "summary": summary,
              "bytes": "wire bytes per frame: protobuf InferRequest + 5 B gRPC prefix + 9 B "
                       "HTTP/2 DATA header; 1 KB = 1000 B"}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    markdown = _markdown(report)
    (out / "report.md").write_text(markdown)
    _plot(rows, out / "rate_accuracy.png")
    if fill:
        _fill_accuracy(bundles[0], rows)
    return out / "report.md"


def _split_rows(root: Path, images: list[Frame], scorer: _Scorer, progress: Progress,
                prefilter: dict[str, Any] | None) -> list[Row]:
    bundle = load_bundle(root)
    manifest = bundle.manifest
    runner = HeadRunner(bundle, threads=1)
    runtime = TailRuntime.load(root)
    rate = next((b.rate_lambda for b in manifest.branches if b.kind == "split"), None)
    rows = []
    task = progress.add_task(f"{manifest.name} split", total=len(images) * len(runner.widths))
    for width in runner.widths:
        runner.set_width(width)
        branch = f"split-w{round(width * 100):03d}"
        results: list[TailResult] = []
        sizes, head_ms, payload_bytes = [], [], []
        for start in range(0, len(images), _CHUNK):
            latents, inputs, originals = [], [], []
            for k in range(start, min(start + _CHUNK, len(images))):
                output = runner.run(images[k].image)
                assert output.payload is not None and output.latent is not None
                geometry = output.head_input.geometry
                request = _request(manifest.name, manifest.version, branch, k, geometry.original,
                                   latent=latent_message(output.payload),
                                   input_size=image_size(geometry.input_size))
                sizes.append(wire_bytes(request))
                payload_bytes.append(output.payload.nbytes)
                head_ms.append(output.head_ms)
                latents.append(runner.codec.decode(output.payload))
                inputs.append(geometry.input_size)
                originals.append(geometry.original)
            results += runtime.run_latents(latents, inputs, originals)
            progress.advance(task, len(latents))
        map_, map50, top1 = scorer.score(results)
        kb = float(np.mean(sizes)) / 1000
        rows.append(Row("split", f"{Path(root).name} w={width:g}", kb,
                        map_, map50, top1, float(statistics.median(head_ms)), str(root), width,
                        rate, extra={"payload_kb": float(np.mean(payload_bytes)) / 1000}))
        if prefilter is not None and width == max(runner.widths):
            scores = np.array([runner.prefilter(runner.preprocess(f.image).image)
                               for f in images])
            positive = np.array([len(f.labels) > 0 for f in images])
            skipped = scores < runner.threshold
            kept = ~skipped
            prefilter.update({
                "bundle": str(root), "threshold": runner.threshold,
                "recall": float((kept & positive).sum() / max(1, positive.sum())),
                "precision": float((kept & positive).sum() / max(1, kept.sum())),
                "skip_share": float(skipped.mean()),
                "empty_share": float((~positive).mean()),
            })
            gated = scorer.score(results, skipped.tolist())
            gated_kb = float(np.mean(np.where(skipped, 0, sizes))) / 1000
            rows.append(Row("split+gate", f"{Path(root).name} w={width:g} gated", gated_kb,
                            gated[0], gated[1], gated[2], None, str(root), width, rate))
    return rows


def _baseline_rows(root: Path, images: list[Frame], scorer: _Scorer, qualities: Sequence[int],
                   progress: Progress) -> list[Row]:
    runtime = TailRuntime.load(root)
    manifest = runtime.bundle.manifest
    total = len(images) * (1 + 2 * len(qualities))
    task = progress.add_task("teacher: raw, jpeg, webp", total=total)
    raw = []
    for start in range(0, len(images), _CHUNK):
        raw += runtime.run_images([f.image for f in images[start : start + _CHUNK]])
        progress.advance(task, min(_CHUNK, len(images) - start))
    raw_bytes = np.mean([f.image.nbytes for f in images]) / 1000
    rows = [Row("raw", "teacher on the raw frame (uint8 RGB)", float(raw_bytes),
                *scorer.score(raw))]
    for codec_id, kind in ((CodecId.JPEG, "jpeg"), (CodecId.WEBP, "webp")):
        for quality in qualities:
            codec = make_codec(codec_id, quality=quality)
            decoded, sizes, encode_ms = [], [], []
            for k, frame in enumerate(images):
                started = time.perf_counter()
                payload = codec.encode(frame.image)
                encode_ms.append((time.perf_counter() - started) * 1e3)
                request = _request(manifest.name, manifest.version, f"{kind}-q{quality}", k,
                                   frame.image.shape[:2],
                                   image=pb.EncodedImage(codec=pb.Codec.Name(codec_id),
                                                         data=payload.strings[0]))
                sizes.append(wire_bytes(request))
                decoded.append(codec.decode(payload))
            results = []
            for start in range(0, len(decoded), _CHUNK):
                results += runtime.run_images(decoded[start : start + _CHUNK])
                progress.advance(task, min(_CHUNK, len(decoded) - start))
            rows.append(Row(kind, f"{kind} q={quality}", float(np.mean(sizes)) / 1000,
                            *scorer.score(results), float(statistics.median(encode_ms)),
                            quality=quality))
    return rows


def _local_ms(root: Path, images: list[Frame]) -> float:
    local = LocalRunner.load(root, threads=1)
    sample = images[: min(20, len(images))]
    local.detect(sample[0].image)  # warm-up
    times = []
    for frame in sample:
        started = time.perf_counter()
        local.detect(frame.image)
        times.append((time.perf_counter() - started) * 1e3)
    return float(statistics.median(times))


def bytes_at(curve: list[Row], target: float, metric: str = "map") -> float | None:
    """KB/frame a codec curve needs to reach `target` (linear in log-bytes between the two
    neighbouring qualities, on the curve's monotone upper envelope); None if it never does."""
    points = sorted((r.kb_per_frame, getattr(r, metric)) for r in curve)
    best, envelope = -1.0, []
    for kb, value in points:
        if value > best:
            envelope.append((kb, value))
            best = value
    if not envelope or target > envelope[-1][1]:
        return None
    if target <= envelope[0][1]:
        return envelope[0][0]
    for (kb0, v0), (kb1, v1) in pairwise(envelope):
        if v0 <= target <= v1:
            t = (target - v0) / max(v1 - v0, 1e-12)
            return float(np.exp(np.log(kb0) + t * (np.log(kb1) - np.log(kb0))))
    return None


def _summary(rows: list[Row], prefilter: dict[str, Any], local_ms: float) -> dict[str, Any]:
    raw = next(r for r in rows if r.method == "raw")
    curves = {kind: [r for r in rows if r.method == kind] for kind in ("jpeg", "webp")}
    at_teacher = {}
    for metric in ("map", "map50"):
        target = getattr(raw, metric) - 0.01
        at_teacher[metric] = {kind: bytes_at(c, target, metric) for kind, c in curves.items()}
    students = []
    for row in rows:
        if row.method not in ("split", "split+gate"):
            continue
        entry: dict[str, Any] = {"setting": row.setting, "kb": row.kb_per_frame,
                                 "map": row.map, "map50": row.map50}
        for metric in ("map", "map50"):
            for kind, curve in curves.items():
                needed = bytes_at(curve, getattr(row, metric), metric)
                entry[f"{kind}_kb_at_{metric}"] = needed
                entry[f"{kind}_ratio_{metric}"] = (needed / row.kb_per_frame
                                                   if needed and row.kb_per_frame else None)
        students.append(entry)
    return {"teacher": {"map": raw.map, "map50": raw.map50, "top1": raw.top1},
            "codec_kb_at_teacher_minus_1pt": at_teacher, "students": students,
            "prefilter": prefilter, "local_ms": local_ms}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _markdown(report: dict[str, Any]) -> str:
    rows = [Row(**r) for r in report["rows"]]
    summary = report["summary"]
    lines = [f"# Rate–accuracy on {report['data']} ({report['frames']} frames)", "",
             f"Bytes: {report['bytes']}.", "",
             "| method | setting | KB/frame | mAP@[.5:.95] | mAP@.5 | cls top-1 | device ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.setting} | {_fmt(r.kb_per_frame, 3)} | {_fmt(r.map)} | "
                     f"{_fmt(r.map50)} | {_fmt(r.top1)} | {_fmt(r.device_ms, 1)} |")
    teacher = summary["teacher"]
    lines += ["",
              f"Teacher on raw frames: mAP {teacher['map']:.3f}, mAP@.5 {teacher['map50']:.3f}.",
              f"Local full model (ONNX, 1 thread): {summary['local_ms']:.1f} ms/frame.", ""]
    for metric, label in (("map", "mAP@[.5:.95]"), ("map50", "mAP@.5")):
        codec_kb = summary["codec_kb_at_teacher_minus_1pt"][metric]
        lines.append(f"KB/frame at teacher {label} − 1 point: JPEG {_fmt(codec_kb['jpeg'])}, "
                     f"WebP {_fmt(codec_kb['webp'])}.")
    lines += ["", "| student | KB/frame | mAP | JPEG KB at equal mAP | JPEG/student | "
              "WebP KB at equal mAP | WebP/student | mAP@.5 | JPEG/student at equal mAP@.5 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary["students"]:
        lines.append(
            f"| {s['setting']} | {_fmt(s['kb'])} | {_fmt(s['map'])} | {_fmt(s['jpeg_kb_at_map'])} "
            f"| {_fmt(s['jpeg_ratio_map'], 1)} | {_fmt(s['webp_kb_at_map'])} | "
            f"{_fmt(s['webp_ratio_map'], 1)} | {_fmt(s['map50'])} | "
            f"{_fmt(s['jpeg_ratio_map50'], 1)} |")
    prefilter = summary["prefilter"]
    if prefilter:
        lines += ["", f"Prefilter (threshold {prefilter['threshold']:.3f}): recall "
                      f"{prefilter['recall']:.3f}, precision {prefilter['precision']:.3f}, frames "
                      f"skipped {prefilter['skip_share']:.3f} (empty frames "
                      f"{prefilter['empty_share']:.3f})."]
    return "\n".join(lines) + "\n"


def _plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    curves: dict[str, list[Row]] = {}
    for row in rows:
        if row.method == "raw":
            axis.axhline(row.map, color="grey", linestyle="--", label="teacher, raw frame")
            continue
        key = row.method if row.method in ("jpeg", "webp") else (
            f"{row.method} λ={row.rate_lambda:g}" if row.rate_lambda is not None
            else f"{row.method} {Path(row.bundle or '').name}")
        curves.setdefault(key, []).append(row)
    for key, curve in curves.items():
        curve = sorted(curve, key=lambda r: r.kb_per_frame)
        axis.plot([r.kb_per_frame for r in curve], [r.map for r in curve], marker="o", label=key)
    axis.set_xscale("log")
    axis.set_xlabel("KB per frame on the wire (log)")
    axis.set_ylabel("mAP@[.5:.95]")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _fill_accuracy(root: Path, rows: list[Row]) -> None:
    bundle = load_bundle(root)
    by_width = {r.width: r.map for r in rows if r.method == "split" and r.bundle == str(root)}
    raw = next(r.map for r in rows if r.method == "raw")
    codec_rows = {(r.method, r.quality): r.map for r in rows if r.quality is not None}
    branches = []
    for branch in bundle.manifest.branches:
        accuracy = branch.accuracy
        if branch.kind == "split" and branch.width in by_width:
            accuracy = by_width[branch.width]
        elif branch.kind == "local":
            accuracy = raw
        elif branch.kind == "skip":
            accuracy = 0.0
        elif branch.kind in ("jpeg", "webp"):
            quality = int(branch.id.rsplit("q", 1)[-1]) if "-q" in branch.id else None
            accuracy = codec_rows.get((branch.kind, quality), accuracy)
        branches.append(branch.model_copy(update={"accuracy": accuracy}))
    write_manifest(root, bundle.manifest.model_copy(update={"branches": tuple(branches)}))
