"""The rate–accuracy report: bundles (every width; one bundle per λ) against full-frame offload
and the device's local model, on one or more test sets side by side (in-distribution first).

    splitedge eval --bundle bundles/demo-shapes --data out/data/shapes/test.json \\
        --data out/data/shapes-shifted/test.json --out reports/demo-shapes

For each split branch every test frame goes the device's real way — `HeadRunner.run` (preprocess,
head ONNX, quantize, ANS encode; its wall time is the device ms) — and the bytes counted are those
of the gRPC message that carries it on the device's stream: the first frame a whole
`InferRequest` (ids, model, branch, sizes, timestamps), every later one a compact lean frame
(what changed: frame id, payload; the latent's codec and shape left out, the times as offsets)
as the daemon sends them to an edge that takes compact lean frames (its default), + the 5-byte
gRPC length prefix and the 9-byte HTTP/2 DATA frame header. The whole
request's mean is kept beside it (`kb_whole`: a unary call's bytes). Then the latent is decoded
and the edge's `TailRuntime` runs the tails. Baselines in the
same run: the teacher on the raw frame, on JPEG (4:2:0 and 4:4:4 chroma) and WebP over a quality
sweep (same request framing, `EncodedImage` payload), and the local full model on the device.
"Bytes at equal mAP" is taken against the best image codec at each accuracy (the fewest bytes
any one codec's curve needs there), not one chosen setting.

Writes report.json, report.md, rate_accuracy.png and a detection sheet of the last set's frames.
A bundle's manifest is written only when asked (`write_manifest=True`: every branch's profile —
bytes mean and p95, device ms median and p95, edge ms, accuracy — from the first set): an
evaluation never edits a shipped artefact behind its owner's back.
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
from shared.bundle.manifest import split_branch_id
from shared.codecs import CodecId, ImageCodec
from shared.messages import FrameRequest, LeanEncoder, infer_request, wire_bytes
from shared.results import Results
from shared.wire import splitedge_pb2 as pb
from split_models.data.coco import CocoFrames, Frame, frame_label
from split_models.evaluation.coco_map import Prediction, coco_map, load_coco
from split_models.evaluation.sheet import detection_sheet
from split_models.runtime import TailRuntime

FALSE_SCORE = 0.5  # a detection a user would act on
_CHUNK = 8
# (method, wire codec, chroma): every image-codec setting a user would try
CODECS = (("jpeg", CodecId.JPEG, "4:2:0"), ("jpeg444", CodecId.JPEG, "4:4:4"),
          ("webp", CodecId.WEBP, "4:2:0"))
IMAGE_METHODS = tuple(method for method, _, _ in CODECS)


@dataclass
class Row:
    method: str  # "split" | "split+gate" | "raw" | "local" | "jpeg" | "jpeg444" | "webp"
    setting: str
    kb_per_frame: float  # mean wire bytes / 1000
    map: float
    map50: float
    top1: float | None = None
    device_ms: float | None = None  # median per frame on the device (head + coding, or encoder)
    bundle: str | None = None
    width: float | None = None
    rate_lambda: float | None = None
    quality: int | None = None
    extra: dict[str, float] = field(default_factory=dict)
    false_per_empty: float | None = None  # detections ≥ 0.5 per empty frame


@dataclass
class EvalSet:
    label: str
    path: Path
    frames: list[Frame]
    scorer: _Scorer


class _Stream:
    """One branch's frames as the device's stream sends them to this project's edge: the first
    whole, then compact lean frames."""

    def __init__(self) -> None:
        self.encoder = LeanEncoder(compact=True)
        self.sent: list[int] = []
        self.whole: list[int] = []

    def send(self, request: pb.InferRequest) -> None:
        self.sent.append(wire_bytes(self.encoder.encode(request)))
        self.whole.append(wire_bytes(request))

    def kb(self) -> float:
        return float(np.mean(self.sent)) / 1000

    def extra(self) -> dict[str, float]:
        return {"kb_p50": float(np.percentile(self.sent, 50)) / 1000,
                "kb_p95": float(np.percentile(self.sent, 95)) / 1000,
                "kb_whole": float(np.mean(self.whole)) / 1000}


def _frame(name: str, version: str, branch: str, frame_id: int,
           original: tuple[int, int]) -> FrameRequest:
    """A whole (self-contained) request's header, as the first frame of a stream sends it."""
    now = time.time_ns()
    return FrameRequest(name, version, branch, stream_id="camera-0", frame_id=frame_id,
                        capture_time_ns=now, deadline_ns=now + 200_000_000,
                        original_size=original)


class _Scorer:
    """Predictions → mAP, top-1 and false detections on empty frames, over the evaluated frames."""

    def __init__(self, data: Path, frames: CocoFrames, count: int) -> None:
        self.gt = load_coco(data)
        self.frames = frames
        self.ids = [frames.images[i]["id"] for i in range(count)]
        self.labels = [frame_label(frames[i]) for i in range(count)]
        self.empty = [label == 0 for label in self.labels]

    def score(self, results: Sequence[Results], skipped: Sequence[bool] | None = None
              ) -> tuple[float, float, float | None, float]:
        predictions, correct, classified, false = [], 0, 0, 0
        for k, result in enumerate(results):
            if skipped is not None and skipped[k]:
                continue
            for detection in result.detections:
                if 1 <= detection.label_id <= len(self.frames.category_ids):
                    predictions.append(Prediction(
                        self.ids[k], detection.box, detection.score,
                        self.frames.category_ids[detection.label_id - 1]))
                if self.empty[k] and detection.score >= FALSE_SCORE:
                    false += 1
            if result.classifications:
                classified += 1
                correct += int(result.classifications[0].label_id == self.labels[k])
        found = coco_map(self.gt, predictions, self.ids)
        top1 = correct / len(results) if classified else None
        return found["map"], found["map50"], top1, false / max(1, sum(self.empty))


def _label(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def run_report(bundles: Sequence[Path], data: Path | Sequence[Path], out: Path, *,
               limit: int | None = None,
               qualities: Sequence[int] = (5, 10, 20, 30, 50, 70, 90),
               write_manifest: bool = False, sheet_frames: int = 12) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]
    sets = []
    for path in paths:
        frames = CocoFrames(path)
        count = min(len(frames), limit or len(frames))
        sets.append(EvalSet(_label(path), path, [frames[i] for i in range(count)],
                            _Scorer(path, frames, count)))
    per_set: dict[str, Any] = {}
    with Progress() as progress:
        for index, eval_set in enumerate(sets):
            rows: list[Row] = []
            prefilter: dict[str, Any] = {}
            sheet: list[Results] = []
            for number, root in enumerate(bundles):
                rows += _split_rows(root, eval_set, progress, prefilter if number == 0 else None,
                                    sheet if number == 0 else None)
            rows += _baseline_rows(bundles[0], eval_set, qualities, progress)
            rows.append(_local_row(bundles[0], eval_set))
            labels = eval_set.scorer.labels
            # a classifier that always answers the most common frame label scores this
            chance = max(labels.count(k) for k in set(labels)) / len(labels) if labels else None
            per_set[eval_set.label] = {"data": str(eval_set.path), "frames": len(eval_set.frames),
                                       "rows": rows, "prefilter": prefilter,
                                       "summary": {**_summary(rows, prefilter),
                                                   "label_chance": chance}}
            if index == len(sets) - 1 and sheet:
                classes = load_bundle(bundles[0]).manifest.classes.get("detection", ())
                detection_sheet(eval_set.frames[:sheet_frames], sheet[:sheet_frames], classes,
                                out / f"detections_{eval_set.path.parent.name}.png")
    report = {
        "bundles": [str(b) for b in bundles],
        "sets": {label: {**entry, "rows": [asdict(r) for r in entry["rows"]]}
                 for label, entry in per_set.items()},
        "generalization": _generalization(per_set),
        "bytes": "wire bytes per frame as the device's stream sends them (the first frame a "
                 "whole InferRequest, the others compact lean frames) + 5 B gRPC prefix + "
                 "9 B HTTP/2 DATA header; kb_whole: whole requests (a unary call); 1 KB = 1000 B",
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(_markdown(report))
    _plot(per_set, out / "rate_accuracy.png")
    if write_manifest:
        fill_profiles(bundles[0], per_set[sets[0].label]["rows"])
    return out / "report.md"


def _split_rows(root: Path, eval_set: EvalSet, progress: Progress,
                prefilter: dict[str, Any] | None, sheet: list[Results] | None) -> list[Row]:
    bundle = load_bundle(root)
    manifest = bundle.manifest
    runner = HeadRunner(bundle, threads=1)
    runtime = TailRuntime.load(root)
    images, scorer = eval_set.frames, eval_set.scorer
    rates = {b.width: b.rate_lambda for b in manifest.branches if b.kind == "split"}
    rows = []
    task = progress.add_task(f"{eval_set.label}: {manifest.name} split",
                             total=len(images) * len(runner.widths))
    for width in runner.widths:
        runner.set_width(width)
        rate = rates.get(width)
        branch = split_branch_id(width)
        results: list[Results] = []
        stream, device_ms, edge_ms, payload_bytes = _Stream(), [], [], []
        for start in range(0, len(images), _CHUNK):
            latents, inputs, originals = [], [], []
            for k in range(start, min(start + _CHUNK, len(images))):
                started = time.perf_counter()
                output = runner.run(images[k].image)
                device_ms.append((time.perf_counter() - started) * 1e3)
                assert output.payload is not None and output.latent is not None
                geometry = output.head_input.geometry
                request = infer_request(
                    _frame(manifest.name, manifest.version, branch, k, geometry.original),
                    latent=output.payload, input_size=geometry.input_size)
                stream.send(request)
                payload_bytes.append(output.payload.nbytes)
                latents.append(runner.codec.decode(output.payload))
                inputs.append(geometry.input_size)
                originals.append(geometry.original)
            started = time.perf_counter()
            results += runtime.run_latents(latents, inputs, originals)
            edge_ms.append((time.perf_counter() - started) * 1e3 / len(latents))
            progress.advance(task, len(latents))
        map_, map50, top1, false = scorer.score(results)
        rows.append(Row("split", f"{Path(root).name} w={width:g}", stream.kb(), map_, map50,
                        top1, float(statistics.median(device_ms)), str(root), width, rate,
                        extra={"payload_kb": float(np.mean(payload_bytes)) / 1000,
                               **stream.extra(),
                               "device_ms_p95": float(np.percentile(device_ms, 95)),
                               "edge_ms": float(statistics.median(edge_ms))},
                        false_per_empty=false))
        if width == max(runner.widths) and sheet is not None:
            sheet.extend(results)
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
                "empty_skipped": float((skipped & ~positive).sum() / max(1, (~positive).sum())),
            })
            gated = scorer.score(results, skipped.tolist())
            # a skipped frame sends nothing (the stream's next frame stays lean: a lean
            # frame is measured against the last one sent, and no field here skips)
            gated_kb = float(np.mean(np.where(skipped, 0, stream.sent))) / 1000
            rows.append(Row("split+gate", f"{Path(root).name} w={width:g} gated", gated_kb,
                            gated[0], gated[1], gated[2], None, str(root), width, rate,
                            false_per_empty=gated[3]))
    return rows


def _baseline_rows(root: Path, eval_set: EvalSet, qualities: Sequence[int],
                   progress: Progress) -> list[Row]:
    runtime = TailRuntime.load(root)
    manifest = runtime.bundle.manifest
    images, scorer = eval_set.frames, eval_set.scorer
    total = len(images) * (1 + len(CODECS) * len(qualities))
    task = progress.add_task(f"{eval_set.label}: teacher on raw / image codecs", total=total)
    raw = []
    for start in range(0, len(images), _CHUNK):
        raw += runtime.run_images([f.image for f in images[start : start + _CHUNK]])
        progress.advance(task, min(_CHUNK, len(images) - start))
    raw_bytes = np.mean([f.image.nbytes for f in images]) / 1000
    map_, map50, top1, false = scorer.score(raw)
    rows = [Row("raw", "teacher on the raw frame (uint8 RGB)", float(raw_bytes), map_, map50,
                top1, false_per_empty=false)]
    for method, codec_id, chroma in CODECS:
        for quality in qualities:
            codec = ImageCodec(codec_id, quality, chroma=chroma)
            decoded, stream, encode_ms = [], _Stream(), []
            for k, frame in enumerate(images):
                started = time.perf_counter()
                payload = codec.encode(frame.image)
                encode_ms.append((time.perf_counter() - started) * 1e3)
                original = (int(frame.image.shape[0]), int(frame.image.shape[1]))
                request = infer_request(
                    _frame(manifest.name, manifest.version, f"{method}-q{quality}", k, original),
                    image=payload)
                stream.send(request)
                decoded.append(codec.decode(payload))
            results, edge_ms = [], []
            for start in range(0, len(decoded), _CHUNK):
                started = time.perf_counter()
                chunk = runtime.run_images(decoded[start : start + _CHUNK])
                edge_ms.append((time.perf_counter() - started) * 1e3 / len(chunk))
                results += chunk
                progress.advance(task, min(_CHUNK, len(decoded) - start))
            map_, map50, top1, false = scorer.score(results)
            name = "jpeg 4:4:4" if method == "jpeg444" else method
            rows.append(Row(method, f"{name} q={quality}", stream.kb(),
                            map_, map50, top1, float(statistics.median(encode_ms)),
                            quality=quality, false_per_empty=false,
                            extra={**stream.extra(),
                                   "device_ms_p95": float(np.percentile(encode_ms, 95)),
                                   "edge_ms": float(statistics.median(edge_ms))}))
    return rows


def _local_row(root: Path, eval_set: EvalSet) -> Row:
    """The device's own full model (ONNX, 1 thread): accuracy and latency, no bytes sent."""
    local = LocalRunner.load(root, threads=1)
    local.detect(eval_set.frames[0].image)  # warm-up
    results, times = [], []
    for frame in eval_set.frames:
        started = time.perf_counter()
        results.append(local.run(frame.image, ("detection",)))
        times.append((time.perf_counter() - started) * 1e3)
    map_, map50, top1, false = eval_set.scorer.score(results)
    return Row("local", "local model on the device (ONNX)", 0.0, map_, map50, top1,
               float(statistics.median(times)), str(root), false_per_empty=false,
               extra={"device_ms_p95": float(np.percentile(times, 95))})


def bytes_at(curve: list[Row], target: float, metric: str = "map") -> float | None:
    """KB/frame a codec curve needs to reach `target` (linear in log-bytes between the two
    neighbouring points, on the curve's monotone upper envelope); None if it never does."""
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


def below_curve(curve: list[Row], target: float, metric: str = "map") -> bool:
    """True when the codec's cheapest setting already reaches `target`: `bytes_at` then returns
    that setting's bytes, an upper bound on what the codec needs (it has no cheaper setting)."""
    cheapest = min(curve, key=lambda r: r.kb_per_frame, default=None)
    return cheapest is not None and target <= float(getattr(cheapest, metric))


def best_bytes_at(curves: dict[str, list[Row]], target: float,
                  metric: str = "map") -> tuple[float | None, bool]:
    """The fewest KB/frame any codec needs to reach `target`, and whether that codec's figure is
    an upper bound (`below_curve`). Each codec on its own curve: one envelope over all codecs'
    points would interpolate between one codec's setting and another's, which no user can pick,
    and could ask more bytes than the better codec alone."""
    found = [(kb, below_curve(curve, target, metric)) for curve in curves.values()
             if (kb := bytes_at(curve, target, metric)) is not None]
    return min(found) if found else (None, False)


def _summary(rows: list[Row], prefilter: dict[str, Any]) -> dict[str, Any]:
    raw = next(r for r in rows if r.method == "raw")
    curves = {kind: [r for r in rows if r.method == kind] for kind in IMAGE_METHODS}
    at_teacher = {}
    for metric in ("map", "map50"):
        target = getattr(raw, metric) - 0.01
        at_teacher[metric] = {kind: bytes_at(c, target, metric) for kind, c in curves.items()}
        at_teacher[metric]["best"] = best_bytes_at(curves, target, metric)[0]
    students = []
    for row in rows:
        if row.method not in ("split", "split+gate"):
            continue
        entry: dict[str, Any] = {"setting": row.setting, "kb": row.kb_per_frame,
                                 "map": row.map, "map50": row.map50}
        for metric in ("map", "map50"):
            target = getattr(row, metric)
            needs = {kind: (bytes_at(curve, target, metric), below_curve(curve, target, metric))
                     for kind, curve in curves.items()}
            needs["best"] = best_bytes_at(curves, target, metric)
            for kind, (needed, at_most) in needs.items():
                entry[f"{kind}_kb_at_{metric}"] = needed
                entry[f"{kind}_at_most_{metric}"] = at_most
                entry[f"{kind}_ratio_{metric}"] = (needed / row.kb_per_frame
                                                   if needed and row.kb_per_frame else None)
        students.append(entry)
    local = next((r for r in rows if r.method == "local"), None)
    return {"teacher": {"map": raw.map, "map50": raw.map50, "top1": raw.top1,
                        "false_per_empty": raw.false_per_empty},
            "codec_kb_at_teacher_minus_1pt": at_teacher, "students": students,
            "prefilter": prefilter, "local_ms": local.device_ms if local else None}


def _generalization(per_set: dict[str, Any]) -> list[dict[str, Any]]:
    """mAP on every later set ÷ mAP on the first, for the teacher, the local model and each
    split width (the rows present in both)."""
    labels = list(per_set)
    if len(labels) < 2:
        return []
    first = {(r.method, r.setting): r for r in per_set[labels[0]]["rows"]}
    out = []
    for label in labels[1:]:
        for row in per_set[label]["rows"]:
            base = first.get((row.method, row.setting))
            if base is None or row.method not in ("raw", "local", "split"):
                continue
            out.append({"set": label, "method": row.method, "setting": row.setting,
                        "map_first": base.map, "map": row.map,
                        "ratio": row.map / base.map if base.map else None,
                        "false_first": base.false_per_empty,
                        "false": row.false_per_empty})
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _markdown(report: dict[str, Any]) -> str:
    sets = report["sets"]
    labels = list(sets)
    rows_by_set = {label: [Row(**r) for r in sets[label]["rows"]] for label in labels}
    title = " and ".join(f"{label} ({sets[label]['frames']} frames)" for label in labels)
    lines = [f"# Rate–accuracy on {title}", "", f"Bytes: {report['bytes']}. FD/empty: "
             f"detections with score ≥ {FALSE_SCORE} per frame without objects. Device ms: "
             "median, 1 thread (split: preprocess + head + entropy coding; codecs: encoding; "
             "local: the whole model).", ""]
    header = "| method | setting | device ms |" + "".join(
        " KB/frame | mAP | mAP@.5 | FD/empty |" for _ in labels)
    lines += [f"Column groups: {', '.join(labels)}.", "", header,
              "|---|---|---:|" + "---:|---:|---:|---:|" * len(labels)]
    first = rows_by_set[labels[0]]
    for index, row in enumerate(first):
        cells = f"| {row.method} | {row.setting} | {_fmt(row.device_ms, 1)} |"
        for label in labels:
            other = rows_by_set[label][index]
            cells += (f" {_fmt(other.kb_per_frame)} | {_fmt(other.map)} | {_fmt(other.map50)} | "
                      f"{_fmt(other.false_per_empty, 2)} |")
        lines.append(cells)
    for label in labels:
        summary = sets[label]["summary"]
        teacher = summary["teacher"]
        lines += ["", f"## {label}", "",
                  f"Teacher on raw frames: mAP {teacher['map']:.3f}, mAP@.5 "
                  f"{teacher['map50']:.3f}, FD/empty {_fmt(teacher['false_per_empty'], 2)}."]
        codec_kb = summary["codec_kb_at_teacher_minus_1pt"]["map"]
        lines.append("KB/frame to reach the teacher's mAP − 1 point: " + ", ".join(
            f"{kind} {_fmt(codec_kb[kind])}" for kind in (*IMAGE_METHODS, "best")) + ".")
        lines += ["", "\"≤\": the codec's cheapest setting (quality 5) already reaches the "
                  "student's accuracy, so it would need at most that many bytes.", "",
                  "| student | KB/frame | mAP | best codec KB at equal mAP | best/student | "
                  "JPEG 4:2:0 / 4:4:4 / WebP KB | mAP@.5 | best/student at equal mAP@.5 |",
                  "|---|---:|---:|---:|---:|---|---:|---:|"]
        for s in summary["students"]:
            def bound(kind: str, metric: str, s: dict[str, Any] = s) -> str:
                return "≤ " if s.get(f"{kind}_at_most_{metric}") else ""

            per_codec = " / ".join(bound(kind, "map") + _fmt(s[f"{kind}_kb_at_map"], 2)
                                   for kind in IMAGE_METHODS)
            lines.append(
                f"| {s['setting']} | {_fmt(s['kb'])} | {_fmt(s['map'])} | "
                f"{bound('best', 'map')}{_fmt(s['best_kb_at_map'])} | "
                f"{bound('best', 'map')}{_fmt(s['best_ratio_map'], 1)} | {per_codec} | "
                f"{_fmt(s['map50'])} | {bound('best', 'map50')}"
                f"{_fmt(s['best_ratio_map50'], 1)} |")
        prefilter = summary["prefilter"]
        if prefilter:
            lines += ["", f"Prefilter (threshold {prefilter['threshold']:.3f}): recall "
                          f"{prefilter['recall']:.3f}, precision {prefilter['precision']:.3f}, "
                          f"frames skipped {prefilter['skip_share']:.3f}, empty frames skipped "
                          f"{prefilter['empty_skipped']:.3f} (empty share "
                          f"{prefilter['empty_share']:.3f})."]
    lines += _profiles(labels[0], rows_by_set[labels[0]],
                       sets[labels[0]]["summary"].get("label_chance"))
    if report["generalization"]:
        lines += ["", "## Generalization: later set ÷ first set", "",
                  "| set | method | setting | mAP first | mAP | ratio | FD/empty first "
                  "| FD/empty |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for g in report["generalization"]:
            lines.append(f"| {g['set']} | {g['method']} | {g['setting']} | "
                         f"{_fmt(g['map_first'])} | {_fmt(g['map'])} | {_fmt(g['ratio'], 2)} | "
                         f"{_fmt(g['false_first'], 2)} | {_fmt(g['false'], 2)} |")
    return "\n".join(lines) + "\n"


def _profiles(label: str, rows: list[Row], chance: float | None) -> list[str]:
    """The branch profiles a scheduler plans with, as `--write-manifest` stores them; the frame
    classifier's top-1 where the bundle classifies (its chance: the most common frame label)."""
    lines = ["", f"## Branch profiles on {label}", "",
             f"cls top-1: the frame label (the largest object's class, or none); always answering "
             f"the most common label scores {_fmt(chance)}.", "",
             "| method | setting | KB mean | KB p50 | KB p95 | device ms p50 | device ms p95 | "
             "edge ms | mAP | cls top-1 |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row.method not in ("split", "local", "jpeg", "webp"):
            continue
        extra = row.extra
        lines.append(
            f"| {row.method} | {row.setting} | {_fmt(row.kb_per_frame)} | "
            f"{_fmt(extra.get('kb_p50'))} | {_fmt(extra.get('kb_p95'))} | "
            f"{_fmt(row.device_ms, 1)} | {_fmt(extra.get('device_ms_p95'), 1)} | "
            f"{_fmt(extra.get('edge_ms'), 1)} | {_fmt(row.map)} | {_fmt(row.top1)} |")
    return lines


def _plot(per_set: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(per_set), figsize=(7 * len(per_set), 4.5), squeeze=False)
    for axis, (label, entry) in zip(axes[0], per_set.items(), strict=True):
        curves: dict[str, list[Row]] = {}
        for row in entry["rows"]:
            if row.method in ("raw", "local"):
                axis.axhline(row.map, color="grey" if row.method == "raw" else "black",
                             linestyle="--" if row.method == "raw" else ":",
                             label="teacher, raw frame" if row.method == "raw" else
                             "local model (0 B)")
                continue
            key = row.method if row.method in IMAGE_METHODS else (
                f"{row.method} λ={row.rate_lambda:g}" if row.rate_lambda is not None
                else f"{row.method} {Path(row.bundle or '').name}")
            curves.setdefault(key, []).append(row)
        for key, curve in curves.items():
            curve = sorted(curve, key=lambda r: r.kb_per_frame)
            axis.plot([r.kb_per_frame for r in curve], [r.map for r in curve], marker="o",
                      label=key)
        axis.set_xscale("log")
        axis.set_title(label)
        axis.set_xlabel("KB per frame on the wire (log)")
        axis.set_ylabel("mAP@[.5:.95]")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def fill_profiles(root: Path, rows: list[Row]) -> None:
    """Write each branch's profile measured on a test set into the bundle's manifest: bytes on
    the wire (mean, p50, p95), device ms (median, p95; preprocessing and coding included), edge
    ms and accuracy (mAP@[.5:.95]). The scheduler plans with these, so they are the test split's,
    not one frame's."""
    bundle = load_bundle(root)
    split = {r.width: r for r in rows if r.method == "split" and r.bundle == str(root)}
    local = next((r for r in rows if r.method == "local"), None)
    # the device encodes JPEG with 4:2:0 chroma (Pillow's default): the "jpeg" rows
    images = {(r.method, r.quality): r for r in rows if r.method in ("jpeg", "webp")}
    branches = []
    for branch in bundle.manifest.branches:
        update: dict[str, Any] = {}
        row: Row | None = None
        if branch.kind == "split":
            row = split.get(branch.width)
        elif branch.kind == "local":
            row = local
        elif branch.kind in ("jpeg", "webp"):
            quality = branch.quality or (
                int(branch.id.rsplit("q", 1)[-1]) if "-q" in branch.id else None)
            row = images.get((branch.kind, quality))
        elif branch.kind == "skip":
            update["accuracy"] = 0.0
        if row is not None:
            update["accuracy"] = row.map
            update["device_ms"] = row.device_ms
            if "device_ms_p95" in row.extra:
                update["device_ms_p95"] = row.extra["device_ms_p95"]
            if branch.kind != "local":
                update["expected_bytes"] = row.kb_per_frame * 1000
                for key, field in (("kb_p50", "bytes_p50"), ("kb_p95", "bytes_p95")):
                    if key in row.extra:
                        update[field] = row.extra[key] * 1000
            if "edge_ms" in row.extra:
                update["edge_ms"] = row.extra["edge_ms"]
        branches.append(branch.model_copy(update=update))
    write_manifest(root, bundle.manifest.model_copy(update={"branches": tuple(branches)}))
