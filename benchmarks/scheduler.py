"""Trace-driven evaluation of the branch policies over a real shaped link.

    sudo .venv/bin/python -m benchmarks.scheduler --trace benchmarks/traces/bursty.csv \\
        --seconds 30 --out out/scheduler/bursty

A real edge server (`splitedge serve`, on the host end of a veth pair) and a real device daemon
(`splitedge device run`, in a network namespace, under a cgroup CPU quota that stands in for a
Pi-class device: 25 % of every 10 ms, so the device runs steadily slower, as a Pi does, rather
than at full speed with stalls of up to 75 ms as under the kernel's 100 ms period) run an
annotated generated clip (objects drifting over photos, with empty stretches; ground truth per
frame). The device's uplink is `tc tbf` on its end of the veth pair,
its rate replayed from the trace (`time_s,mbit`) once a second. Every policy — adaptive and each
static branch of the bundle — runs the same clip over the same trace; per policy:

- sla_hit: frames answered (edge, local, tracked, or prefiltered) within the SLA of their nominal
  capture time ÷ all frames;
- map: COCO mAP@[.5:.95] over all frames, a frame missed (no answer within the SLA) counting as
  no detections;
- bytes_per_frame: bytes sent ÷ frames; switches: changes of the detecting branch.

Prints `{"policies": {name: {...}}}` on stdout; writes `table.md`, `results.json` and
`adaptive.png` (true vs estimated throughput, branch, latency vs SLA over time) to `--out`.
Two adaptive runs: `adaptive` may choose every branch; `adaptive-remote` the split widths and
image branches only, with `local.onnx` left to what it is on a device whose local model is
small: the fallback for frames the edge fails.
Needs root (network namespaces, tc, cgroups): without it, says so and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from loadtest.netshape import LinkSpec, rate_at, read_trace, shape
from splitedge.process import SplitedgeProcess

ROOT = Path(__file__).resolve().parent.parent
HOST_IP, DEVICE_IP = "10.231.7.1", "10.231.7.2"
CGROUP = Path("/sys/fs/cgroup/cpu/splitedge-scheduler-bench")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "demo-shapes")
    parser.add_argument("--fps", type=float, default=15)
    parser.add_argument("--sla-ms", type=float, default=300)
    parser.add_argument("--cpu-quota", type=float, default=0.25, help="device CPU share")
    parser.add_argument(
        "--cpu-period-ms", type=float, default=10,
        help="the quota's accounting period: a process that spends its share early in a period "
        "waits out the rest, so a long period stalls a frame for up to (1 - quota) x period",
    )
    parser.add_argument("--rtt-ms", type=float, default=20, help="added on the device uplink")
    parser.add_argument("--policies", nargs="*", help="default: adaptive + every static branch")
    parser.add_argument(
        "--scheduler", nargs="*", default=[], metavar="KEY=VALUE", type=_setting,
        help="settings of the adaptive policies' scheduler (pipeline.scheduler), e.g. byte_price=0",
    )
    args = parser.parse_args()
    problem = _cannot_run()
    if problem:
        print(f"benchmarks.scheduler: {problem}", file=sys.stderr)
        return 2
    from shared.bundle import load_bundle

    manifest = load_bundle(args.bundle).manifest
    statics = [b.id for b in manifest.branches if b.kind != "skip"]
    args.remote_branches = [b.id for b in manifest.branches if b.kind in ("split", "jpeg", "webp")]
    policies = args.policies or ["adaptive", "adaptive-remote", *statics]
    trace = read_trace(args.trace)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    frames_dir, truth = make_clip(out / "clip", int(args.seconds * args.fps))
    results: dict[str, Any] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    with network(args.rtt_ms) as shaper, edge_server(args.bundle, out) as grpc_port:
        for policy in policies:
            records, started = run_device(
                policy, args, frames_dir, grpc_port, out / policy, shaper, trace
            )
            runs[policy] = records
            results[policy] = score(
                records, truth, args, started, outage_ends(trace, args.seconds)
            )
            print(f"{policy}: {results[policy]}", file=sys.stderr, flush=True)
    report = {
        "trace": str(args.trace),
        "seconds": args.seconds,
        "fps": args.fps,
        "sla_ms": args.sla_ms,
        "cpu_quota": args.cpu_quota,
        "cpu_period_ms": args.cpu_period_ms,
        "scheduler": dict(args.scheduler),
        "policies": results,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "table.md").write_text(table(report))
    for name in ("adaptive", "adaptive-remote"):
        if name in runs:
            plot(runs[name], trace, args, out / f"{name}.png")
    print(json.dumps({"policies": results}))
    return 0


# -- the world ------------------------------------------------------------------------------------
def _cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces, tc and cgroups (run it with sudo)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (Debian: iproute2)"
    if not Path("/sys/fs/cgroup/cpu").is_dir():
        return "needs the cgroup v1 cpu controller at /sys/fs/cgroup/cpu for the device's quota"
    return None


def _sh(*command: str, check: bool = True) -> None:
    subprocess.run(command, check=check, capture_output=True)


class Shaper:
    """The device's uplink: `loadtest.netshape` (tbf, netem where the kernel has it)."""

    def __init__(self, namespace: str, device: str, rtt_ms: float) -> None:
        self.namespace, self.device, self.rtt_ms = namespace, device, rtt_ms
        self.mbit = 0.0

    def set(self, mbit: float) -> None:
        if mbit == self.mbit:
            return
        shape(
            self.device,
            LinkSpec(max(mbit, 0.01), delay_ms=self.rtt_ms, queue_ms=400),
            self.namespace,
        )
        self.mbit = mbit


@contextlib.contextmanager
def network(rtt_ms: float) -> Iterator[Shaper]:
    """A namespace for the device, joined to the host by a veth pair; the device's egress shaped
    by `tc tbf`. `--rtt-ms` is added as netem delay on the uplink where the kernel has netem
    (most hosts); where it does not (this build machine), the round trip is the veth's (< 1 ms)."""
    pid = os.getpid()
    namespace, host_if, dev_if = f"sesched{pid}", f"seh{pid}", f"sed{pid}"
    _sh("ip", "netns", "add", namespace)
    try:
        _sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", dev_if)
        _sh("ip", "link", "set", dev_if, "netns", namespace)
        _sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", host_if)
        _sh("ip", "link", "set", host_if, "up")
        _sh("ip", "netns", "exec", namespace, "ip", "addr", "add", f"{DEVICE_IP}/30", "dev", dev_if)
        _sh("ip", "netns", "exec", namespace, "ip", "link", "set", dev_if, "up")
        _sh("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        shaper = Shaper(namespace, dev_if, rtt_ms)
        shaper.set(20)
        yield shaper
    finally:
        _sh("ip", "link", "del", host_if, check=False)
        _sh("ip", "netns", "del", namespace, check=False)


@contextlib.contextmanager
def edge_server(bundle: Path, out: Path) -> Iterator[int]:
    edge = SplitedgeProcess(
        [
            "serve",
            "--host",
            HOST_IP,
            "--bundle",
            str(bundle),
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--max-queue-delay-ms",
            "2",
        ],
        out / "edge.log",
    ).start()
    try:
        yield int(edge.wait_for("ready")["listening"]["grpc_port"])
    finally:
        edge.stop()


def make_clip(folder: Path, frames: int) -> tuple[Path, dict[str, Any]]:
    """Annotated frames of the benchmark's scenes (objects drifting over a panning background),
    with empty stretches; COCO ground truth."""
    from PIL import Image

    from split_models.data.synthetic import CLASSES, generate_video

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    images, annotations = [], []
    index = 0
    segment = 0
    while index < frames:
        count = min(frames - index, 60 if segment % 3 != 2 else 20)
        objects = 0 if segment % 3 == 2 else 3
        # an empty stretch is a camera with nothing in view: no objects drawn, none annotated
        clip = generate_video(folder / f"seg{segment}.npz", seed=100 + segment, frames=count,
                              objects=objects)
        with np.load(clip.with_suffix(".npz")) as data:
            for t, frame in enumerate(data["frames"]):
                Image.fromarray(frame).save(folder / f"{index:06d}.png")
                images.append({"id": index, "width": frame.shape[1], "height": frame.shape[0]})
                for box, label in zip(data["boxes"][t], data["labels"], strict=True):
                    if not np.isnan(box).any():
                        annotations.append(
                            {
                                "id": len(annotations) + 1,
                                "image_id": index,
                                "category_id": int(label),
                                "bbox": [float(v) for v in box],
                                "area": float(box[2] * box[3]),
                                "iscrowd": 0,
                            }
                        )
                index += 1
        clip.with_suffix(".npz").unlink()
        segment += 1
    if segment and not any(a for a in annotations):
        raise RuntimeError("the clip has no objects")
    truth = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)],
    }
    return folder, truth


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


# -- one run --------------------------------------------------------------------------------------
def run_device(
    policy: str,
    args: argparse.Namespace,
    frames_dir: Path,
    grpc_port: int,
    workdir: Path,
    shaper: Shaper,
    trace: list[tuple[float, float]],
) -> tuple[list[dict[str, Any]], float]:
    workdir.mkdir(parents=True, exist_ok=True)
    outcomes = workdir / "outcomes.jsonl"
    outcomes.unlink(missing_ok=True)
    pipeline: dict[str, Any] = {"threads": 1, "prefilter": {"enabled": True, "gate": True}}
    if policy == "adaptive":
        pipeline["policy"] = "adaptive"
        pipeline["scheduler"] = dict(args.scheduler)
    elif policy == "adaptive-remote":
        # local.onnx only as the fallback for frames the edge fails, not as a plan.
        pipeline["policy"] = "adaptive"
        pipeline["scheduler"] = {**dict(args.scheduler), "branches": list(args.remote_branches)}
    else:
        pipeline["branch"] = policy
    config = {
        "device_id": f"bench-{policy}",
        "state_dir": str(workdir / "state"),
        "bundle": {"path": str(args.bundle)},
        "edge": {"target": f"{HOST_IP}:{grpc_port}", "sla_ms": args.sla_ms, "window": 4},
        # Live: read at the frame rate by a capture thread, the oldest dropped when the device
        # falls behind, as a camera would; a drop is an outcome (`dropped`, `behind`).
        "source": {
            "kind": "folder",
            "path": str(frames_dir),
            "pattern": "*.png",
            "fps": args.fps,
            "live": True,
        },
        "pipeline": pipeline,
        "sinks": [{"kind": "file", "path": str(outcomes)}],
        "metrics": {"enabled": False},
    }
    (workdir / "device.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shaper.set(trace[0][1])
    CGROUP.mkdir(exist_ok=True)
    period_us = int(args.cpu_period_ms * 1000)
    (CGROUP / "cpu.cfs_quota_us").write_text("-1")  # a period below the old quota is refused
    (CGROUP / "cpu.cfs_period_us").write_text(str(period_us))
    (CGROUP / "cpu.cfs_quota_us").write_text(str(max(1000, int(period_us * args.cpu_quota))))
    process = SplitedgeProcess(
        ["device", "run", "--config", workdir / "device.yaml"],
        workdir / "device.log",
        prefix=("ip", "netns", "exec", shaper.namespace),
    ).start()
    assert process.popen is not None
    (CGROUP / "cgroup.procs").write_text(str(process.popen.pid))
    started = _wait_first_outcome(outcomes, process)
    stop = threading.Event()
    replay = threading.Thread(target=_replay, args=(shaper, trace, started, stop), daemon=True)
    replay.start()
    try:
        process.wait(timeout=args.seconds * 4 + 120)
    except subprocess.TimeoutExpired:
        process.stop()
    stop.set()
    replay.join()
    records = [json.loads(line) for line in outcomes.read_text().splitlines()]
    return records, started


def _wait_first_outcome(outcomes: Path, process: SplitedgeProcess) -> float:
    """Wall time (unix s) of the first frame's capture: the trace's zero."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.running:
        if outcomes.exists() and outcomes.stat().st_size:
            first = json.loads(outcomes.read_text().splitlines()[0])
            return float(first["capture_time_unix_ns"]) / 1e9
        time.sleep(0.05)
    raise RuntimeError(f"the device produced no outcome; see {outcomes.parent / 'device.log'}")


def _replay(
    shaper: Shaper, trace: list[tuple[float, float]], started: float, stop: threading.Event
) -> None:
    while not stop.is_set():
        shaper.set(rate_at(trace, time.time() - started))
        stop.wait(0.25)


# -- scores ---------------------------------------------------------------------------------------
OUTAGE_MBIT = 0.1  # a trace row below this is an outage: a frame's bytes do not cross in time


def outage_ends(trace: list[tuple[float, float]], seconds: float) -> list[float]:
    """The clip times (s) at which the trace's outages end, within the first `seconds`."""
    ends, before = [], None
    for start, rate in trace:
        if start >= seconds:
            break
        if before is not None and before < OUTAGE_MBIT <= rate:
            ends.append(start)
        before = rate
    return ends


def score(
    records: list[dict[str, Any]],
    truth: dict[str, Any],
    args: argparse.Namespace,
    started: float,
    outages_end: Sequence[float] = (),
) -> dict[str, Any]:
    frames = len(truth["images"])
    by_id = {r["frame_id"]: r for r in records}
    period = 1.0 / args.fps
    answered = 0
    detections = []
    switches, last = 0, None
    for i in range(frames):
        record = by_id.get(i)
        if record is None:
            continue
        nominal = started + i * period
        done = record["capture_time_unix_ns"] / 1e9 + record["timings_ms"]["total"] / 1e3
        in_time = record["kind"] != "dropped" and done - nominal <= args.sla_ms / 1e3
        answered += in_time
        decision = record.get("decision") or {}
        if record["kind"] in ("edge", "local") and not decision.get("probe"):
            if last is not None and record["branch"] != last:
                switches += 1
            last = record["branch"]
        if in_time:
            for d in record["detections"]:
                x1, y1, x2, y2 = d["box"]
                detections.append(
                    {
                        "image_id": i,
                        "category_id": d["label_id"],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": d["score"],
                    }
                )
    sent = sum(r["bytes_sent"] for r in records)
    # how steady the device's quota made it: a split head's time per frame (none on other
    # branches), whose spread is what the latency model must cover
    heads = [r["timings_ms"]["head"] for r in records if "head" in r["timings_ms"]]
    return {
        "sla_hit": round(answered / frames, 4),
        "map": round(coco_map(truth, detections), 4),
        "bytes_per_frame": round(sent / frames, 1),
        "head_ms_p50_p90": [round(float(v), 1) for v in np.percentile(heads, [50, 90])]
        if heads else None,
        "switches": switches,
        "edge_after_outage_s": edge_after(by_id, outages_end, args.fps, frames),
        "outcomes": len(records),
        "frames": frames,
    }


def edge_after(
    by_id: dict[int, dict[str, Any]], outages_end: Sequence[float], fps: float, frames: int
) -> list[float | None]:
    """Per outage, seconds from its end to the first frame the edge answered on the plan's own
    branch (a probe is the policy asking, not using the edge); None: not before the clip ended."""
    back: list[float | None] = []
    for end in outages_end:
        first = next((i for i in range(math.ceil(end * fps), frames)
                      if (r := by_id.get(i)) is not None and r["kind"] == "edge"
                      and not (r.get("decision") or {}).get("probe")), None)
        back.append(None if first is None else round(first / fps - end, 2))
    return back


def coco_map(truth: dict[str, Any], detections: list[dict[str, Any]]) -> float:
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(truth))
        gt.createIndex()
        dt = gt.loadRes(detections)
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(max(evaluation.stats[0], 0.0))


def table(report: dict[str, Any]) -> str:
    lines = [
        f"trace `{report['trace']}`, {report['seconds']} s at {report['fps']} fps, "
        f"SLA {report['sla_ms']} ms, device CPU quota {report['cpu_quota']} of every "
        f"{report['cpu_period_ms']:g} ms",
        "",
        "| policy | SLA hit | mAP | bytes/frame | switches | split head ms p50 / p90 "
        "| edge again after an outage, s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["policies"].items():
        heads = r.get("head_ms_p50_p90")
        # "never": not on the edge again before the clip ended
        back = ", ".join("never" if b is None else f"{b:.2f}"
                         for b in r.get("edge_after_outage_s", [])) or "—"
        lines.append(
            f"| {name} | {r['sla_hit']:.1%} | {r['map']:.3f} | {r['bytes_per_frame']:.0f} | "
            f"{r['switches']} | {' / '.join(f'{v:.1f}' for v in heads) if heads else '—'} "
            f"| {back} |"
        )
    return "\n".join(lines) + "\n"


def plot(
    records: list[dict[str, Any]],
    trace: list[tuple[float, float]],
    args: argparse.Namespace,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = sorted(records, key=lambda r: r["frame_id"])
    t0 = records[0]["capture_time_unix_ns"] / 1e9
    times = [r["capture_time_unix_ns"] / 1e9 - t0 for r in records]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    horizon = max(times) if times else args.seconds
    xs = np.linspace(0, horizon, 400)
    axes[0].plot(xs, [rate_at(trace, x) for x in xs], label="true (trace)", color="black")
    est = [
        (t, r["decision"]["link_mbit"])
        for t, r in zip(times, records, strict=True)
        if r.get("decision") and r["decision"].get("link_mbit") is not None
    ]
    if est:
        axes[0].plot(*zip(*est, strict=True), label="estimated", color="tab:orange")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("uplink Mbit/s")
    axes[0].legend()
    names = sorted({r["branch"] for r in records if r["branch"]})
    for name in names:
        pts = [
            (t, names.index(name))
            for t, r in zip(times, records, strict=True)
            if r["branch"] == name
        ]
        axes[1].scatter(*zip(*pts, strict=True), s=6, label=name)
    tracked = [(t, -0.5) for t, r in zip(times, records, strict=True) if r["kind"] == "tracked"]
    if tracked:
        axes[1].scatter(*zip(*tracked, strict=True), s=4, marker="|", color="grey", label="tracked")
    axes[1].set_yticks(range(len(names)), names)
    axes[1].set_ylabel("branch")
    axes[2].plot(times, [r["timings_ms"]["total"] for r in records], lw=0.8, label="latency")
    axes[2].axhline(args.sla_ms, color="red", ls="--", label="SLA")
    axes[2].set_ylabel("ms from capture")
    axes[2].set_xlabel("seconds")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
