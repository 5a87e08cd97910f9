"""Device figures for the closing note; prints one JSON object.

    python -m benchmarks.device [--bundle DIR] [--frames 200] [--threads 1,2] [--skip-install]

- per-stage device latency p50/p99 (preprocess, prefilter, head, encode, uplink wait) and the
  sustained frame rate, from a real daemon process streaming the generated test stream as fast
  as it can to a real edge server on loopback, once per thread count;
- payload bytes per frame;
- RSS of the daemon idle (sessions loaded, a 0.5 fps stream) and working (the max while
  streaming), against a process that only imports torch + torchvision, and the edge server;
- install size of the `device` extra vs the `edge` extra: pip resolves each extra
  (`pip install --dry-run --report`) and the installed size of each resolved package is summed
  from this venv's site-packages (packages not installed here are listed, not guessed).

Without --bundle the demo-sized bundle is exported first (tiny Faster R-CNN + tiny ResNet).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from splitedge.process import SplitedgeProcess

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("preprocess", "prefilter", "head", "encode", "uplink", "total")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def export_demo(out: Path) -> Path:
    subprocess.run(
        [
            sys.executable, "-m", "split_models", "export",
            "--teacher", "detection=tiny_fasterrcnn", "--teacher", "classification=tiny_resnet",
            "--name", "demo-shapes", "--out", str(out),
        ],
        cwd=ROOT, check=True, capture_output=True,
    )
    return out


def start_edge(bundle: Path, log: Path) -> tuple[SplitedgeProcess, int]:
    port = _free_port()
    process = SplitedgeProcess(
        ["serve", "--bundle", bundle, "--grpc-port", port, "--http-port", "0"], log
    ).start()
    process.wait_for("ready", 180)
    return process, port


def run_daemon(
    workdir: Path, bundle: Path, port: int, threads: int, source: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any], float, float]:
    """Outcomes, the `stopped` event, RSS just after ready and the max RSS while running."""
    outcomes = workdir / f"outcomes-{threads}.jsonl"
    config = {
        "device_id": f"bench-{threads}",
        "state_dir": str(workdir / "state"),
        "bundle": {"path": str(bundle)},
        "source": source,
        "edge": {"target": f"127.0.0.1:{port}", "window": 4, "sla_ms": 5000},
        "pipeline": {"threads": threads, "branch": None},
        "sinks": [{"kind": "file", "path": str(outcomes)}],
        "metrics": {"enabled": False},
    }
    path = workdir / f"device-{threads}.yaml"
    path.write_text(yaml.safe_dump(config))
    process = SplitedgeProcess(
        ["device", "run", "--config", path], workdir / f"device-{threads}.log"
    ).start()
    process.wait_for("ready", 120)
    assert process.popen is not None
    pid = process.popen.pid
    ready_rss = _rss_mb(pid)
    peak = [ready_rss]
    while process.running:
        peak.append(_rss_mb(pid))
        time.sleep(0.05)
    process.wait()
    stopped = process.event("stopped") or {}
    records = [json.loads(line) for line in outcomes.read_text().splitlines()]
    return records, stopped, ready_rss, max(peak)


def idle_rss(workdir: Path, bundle: Path, port: int) -> float:
    source = {"kind": "generated", "fps": 0.5, "live": True}
    config_dir = workdir / "idle"
    config_dir.mkdir()
    outcomes = config_dir / "o.jsonl"
    path = config_dir / "device.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(config_dir / "state"), "bundle": {"path": str(bundle)}, "source": source,
        "edge": {"target": f"127.0.0.1:{port}"}, "metrics": {"enabled": False},
        "sinks": [{"kind": "file", "path": str(outcomes)}],
    }))
    process = SplitedgeProcess(
        ["device", "run", "--config", path], config_dir / "device.log"
    ).start()
    process.wait_for("ready", 120)
    time.sleep(3)
    assert process.popen is not None
    rss = _rss_mb(process.popen.pid)
    process.stop(30)
    return rss


def torch_rss() -> float:
    process = subprocess.Popen(
        [sys.executable, "-c", "import torch, torchvision, sys; print('up', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    process.stdout.readline()
    rss = _rss_mb(process.pid)
    process.communicate("")
    return rss


def stage_figures(records: list[dict[str, Any]], stopped: dict[str, Any]) -> dict[str, Any]:
    edge = [r for r in records if r["kind"] == "edge"]
    stages = {}
    for stage in STAGES:
        values = [r["timings_ms"][stage] for r in edge if stage in r["timings_ms"]]
        if values:
            stages[stage] = {
                "p50_ms": round(_percentile(values, 0.5), 3),
                "p99_ms": round(_percentile(values, 0.99), 3),
            }
    sent = [r["bytes_sent"] for r in edge]
    return {
        "frames": len(records),
        "outcomes": stopped.get("outcomes"),
        "fps": round(len(records) / stopped["seconds"], 2) if stopped.get("seconds") else None,
        "stages": stages,
        "bytes_per_frame": {
            "mean": round(statistics.fmean(sent), 1) if sent else None,
            "p50": _percentile(sent, 0.5) if sent else None,
        },
        "branch": edge[0]["branch"] if edge else None,
    }


def install_sizes() -> dict[str, Any]:
    installed = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower().replace("_", "-")
        size = 0
        for file in dist.files or ():
            path = Path(str(file.locate()))
            size += path.stat().st_size if path.is_file() else 0
        installed[name] = size
    result: dict[str, Any] = {}
    for extra in ("device", "edge"):
        with tempfile.TemporaryDirectory() as scratch:
            report = Path(scratch) / "report.json"
            done = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                 "--quiet", "--report", str(report), "-c", str(ROOT / "constraints.txt"),
                 f".[{extra}]"],
                cwd=ROOT, capture_output=True, text=True, timeout=600,
            )
            if done.returncode != 0:
                result[extra] = {"error": done.stderr[-500:]}
                continue
            names = sorted(
                item["metadata"]["name"].lower().replace("_", "-")
                for item in json.loads(report.read_text())["install"]
            )
        names = [n for n in names if n != "splitedge"]
        sizes = {n: installed[n] for n in names if n in installed}
        result[extra] = {
            "packages": len(names),
            "installed_mb": round(sum(sizes.values()) / 2**20, 1),
            "largest": sorted(
                ((n, round(s / 2**20, 1)) for n, s in sizes.items()), key=lambda x: -x[1]
            )[:5],
            "not_installed_here": [n for n in names if n not in installed],
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device")
    parser.add_argument("--bundle", type=Path, help="a bundle dir (default: export the demo)")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--skip-install", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="splitedge-bench-") as scratch:
        workdir = Path(scratch)
        bundle = args.bundle or export_demo(workdir / "demo-shapes")
        edge, port = start_edge(bundle, workdir / "edge.log")
        try:
            figures: dict[str, Any] = {
                "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                "bundle": str(bundle.name),
                "source": "generated 320x240, as fast as possible, prefilter threshold of the "
                "bundle, window 4, one device stream against a loopback edge",
                "threads": {},
            }
            working = 0.0
            for threads in (int(t) for t in args.threads.split(",")):
                source = {"kind": "generated", "frames": args.frames, "fps": 1000.0, "seed": 1}
                records, stopped, _ready, peak = run_daemon(
                    workdir, bundle, port, threads, source
                )
                figures["threads"][str(threads)] = stage_figures(records, stopped)
                figures["threads"][str(threads)]["torch_modules_in_daemon"] = stopped.get(
                    "forbidden_modules"
                )
                working = max(working, peak)
            figures["rss_mb"] = {
                "daemon_idle": round(idle_rss(workdir, bundle, port), 1),
                "daemon_working_max": round(working, 1),
                "python_importing_torch_torchvision": round(torch_rss(), 1),
                "edge_server_after_run": round(_rss_mb(edge.pid), 1),
            }
        finally:
            edge.stop(30)
    if not args.skip_install:
        figures["install"] = install_sizes()
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
