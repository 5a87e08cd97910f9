"""`make loadtest`: how many cameras one edge holds per uplink rate, split latents vs JPEG frames.

    sudo .venv/bin/python -m loadtest.run [--rates 1,5,20] [--users 1,2,4,8,16] [--duration 15]

Starts an edge (`splitedge serve`, the shipped demo bundle) on one end of a veth pair and runs
headless locust cameras (`CameraStream`: 15 fps each, a 300 ms deadline per frame, 4 frames in
flight at most) in a network namespace on the other end, whose uplink is shaped with tc tbf at
each rate in turn. For each rate and payload kind (the widest split branch; the JPEG branch) the
camera count grows until the cameras no longer hold 15 fps within the SLA (then larger counts
are skipped: they would fail too). Each run records requests/s, p50/p95/p99 of answered frames,
failures by status, the edge's shed counters (from /metrics) and its RSS, and the bytes that
crossed the shaped link.

A camera count *holds* when at least 95 % of the frames it captured came back OK and the p95
latency of answered frames is within the SLA. Writes `report.md`, `report.png` and
`results.json` to --out. Needs root (network namespaces, tc); without it, says so and exits 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadtest.netshape import LinkSpec, shape
from loadtest.statuses import SHED_ERRORS
from splitedge.process import SplitedgeProcess

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "demo-shapes"
PAYLOADS = {"split": ("split", "1.0", "split-w100"), "jpeg": ("jpeg", "", "jpeg-q90")}
SHED_STATUSES = ("resource_exhausted", "deadline_exceeded")
HOLD_FRACTION = 0.95


@dataclass
class RunResult:
    rate_mbit: float
    payload: str
    users: int
    duration_s: float
    offered: int = 0  # frames the cameras captured
    sent: int = 0
    ok: int = 0
    rps: float = 0.0  # answers per second (ok or not)
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    edge_shed: dict[str, float] = field(default_factory=dict)
    edge_rss_mb: float = 0.0
    wire_bytes_per_frame: float = 0.0
    holds: bool = False


class Namespace:
    """A network namespace joined to this one by a veth pair; its uplink shaped by tc."""

    def __init__(self, tag: str) -> None:
        self.name = f"splitedge-{tag}"
        self.host_dev, self.ns_dev = f"seh{tag}", f"sen{tag}"
        self.host_ip, self.ns_ip = "10.213.77.1", "10.213.77.2"

    def __enter__(self) -> Namespace:
        self.close()
        for command in (
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev],
            ["ip", "link", "set", self.ns_dev, "netns", self.name],
            ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_dev],
            ["ip", "link", "set", self.host_dev, "up"],
            ["ip", "-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_dev],
            ["ip", "-n", self.name, "link", "set", self.ns_dev, "up"],
            ["ip", "-n", self.name, "link", "set", "lo", "up"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_dev], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def tx_bytes(self) -> int:
        counter = f"/sys/class/net/{self.ns_dev}/statistics/tx_bytes"
        done = subprocess.run(
            ["ip", "netns", "exec", self.name, "cat", counter],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return int(done.stdout)


class Edge:
    """`splitedge serve` on the host end of the veth, awaited through its lifecycle events."""

    def __init__(self, host: str, log: Path, extra: list[str]) -> None:
        self.process = SplitedgeProcess(
            ["serve", "--bundle", BUNDLE, "--host", host, "--grpc-port", "0", "--http-port", "0",
             *extra],
            log,
        ).start()  # fmt: skip
        events = self.process.wait_for("ready", timeout=300)
        self.grpc_port = events["listening"]["grpc_port"]
        self.http_port = events["listening"]["http_port"]
        self.host = host
        assert self.process.popen is not None
        self.pid = self.process.popen.pid

    def metrics(self) -> dict[str, float]:
        """Answers by status (the shed ones among them) from the edge's /metrics."""
        url = f"http://{self.host}:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        totals: Counter[str] = Counter()
        for line in text.splitlines():
            if line.startswith("splitedge_requests_total{"):
                labels, value = line.rsplit(" ", 1)
                status = labels.split('status="', 1)[1].split('"', 1)[0]
                totals[status] += float(value)
        return dict(totals)

    def rss_mb(self) -> float:
        # The edge's /metrics carries no process collector (its registry is its own), so RSS
        # comes from /proc, where the runner can see it.
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.process.stop(30)


def run_locust(
    ns: Namespace, edge: Edge, payload: str, users: int, args: argparse.Namespace, out: Path
) -> RunResult:
    kind, widths, branch = PAYLOADS[payload]
    prefix = out / "runs" / f"{args.current_rate:g}mbit-{payload}-{users}u"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    before, tx_before = edge.metrics(), ns.tx_bytes()
    command = [
        "ip", "netns", "exec", ns.name, sys.executable, "-m", "locust",
        "-f", str(ROOT / "loadtest" / "locustfile.py"), "--headless", "--only-summary",
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{args.duration:g}s",
        "--stop-timeout", "2", "--csv", str(prefix),
        "--host", f"http://{edge.host}:{edge.http_port}",
        "--grpc-target", f"{edge.host}:{edge.grpc_port}",
        # exactly the measured branch: the bundle has several JPEG qualities, and a camera
        # cycling through them would send the measured one a quarter of its frames
        "--bundle", str(BUNDLE), "--payload", kind, "--branches", branch, "--fps", str(args.fps),
        "--sla-ms", str(args.sla_ms), "--window", str(args.window), "CameraStream",
    ]  # fmt: skip
    if widths:
        command[command.index("--payload"):command.index("--payload")] = ["--widths", widths]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    (prefix.parent / f"{prefix.name}.log").write_text(done.stdout + done.stderr)
    after, tx_after = edge.metrics(), ns.tx_bytes()

    result = RunResult(args.current_rate, payload, users, args.duration)
    with Path(f"{prefix}_stats.csv").open() as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    with Path(f"{prefix}_failures.csv").open() as handle:
        for row in csv.DictReader(handle):
            result.failures[row["Error"]] = result.failures.get(row["Error"], 0) + int(
                row["Occurrences"]
            )
    answered = rows.get(f"Stream {branch}")
    not_sent = rows.get(f"Stream {branch} (not sent)")
    if answered:
        result.sent = int(answered["Request Count"])
        result.ok = result.sent - int(answered["Failure Count"])
        result.rps = float(answered["Requests/s"])
        result.p50_ms = float(answered["50%"] or 0)
        result.p95_ms = float(answered["95%"] or 0)
        result.p99_ms = float(answered["99%"] or 0)
    result.offered = result.sent + (int(not_sent["Request Count"]) if not_sent else 0)
    result.edge_shed = {s: after.get(s, 0) - before.get(s, 0) for s in SHED_STATUSES}
    result.edge_rss_mb = round(edge.rss_mb(), 1)
    result.wire_bytes_per_frame = (tx_after - tx_before) / max(1, result.sent)
    unexpected = {e: n for e, n in result.failures.items() if e not in SHED_ERRORS}
    result.holds = (
        result.offered > 0
        and result.ok >= HOLD_FRACTION * result.offered
        and result.p95_ms <= args.sla_ms
        and not unexpected
    )
    return result


def write_report(results: list[RunResult], args: argparse.Namespace, out: Path) -> Path:
    saved = {"command": args.argv, "runs": [asdict(r) for r in results]}
    (out / "results.json").write_text(json.dumps(saved, indent=2))
    lines = [
        "# Throttled-network load report",
        "",
        f"One edge (`splitedge serve`, demo bundle, {os.cpu_count()} CPU cores shared) and locust "
        f"cameras (`CameraStream`: {args.fps:g} fps each, {args.sla_ms:g} ms deadline, "
        f"{args.window} frames in flight) in a network namespace whose uplink is shaped with "
        f"`tc tbf`; {args.duration:g} s per run. Command: `{' '.join(args.argv)}`.",
        "",
        "A count *holds* when ≥ 95 % of captured frames came back OK and the p95 of answered "
        "frames is within the SLA. Latencies are of answered frames (OK or refused); frames "
        "never sent because the camera's window was full count as `WINDOW_FULL`. Shed: the "
        "edge's `splitedge_requests_total` by status during the run; RSS: the edge process.",
        "",
        "## Cameras per edge at 15 fps within the SLA",
        "",
        "*Measured*: the most cameras that held on this machine (edge, locust and everything "
        "else share its cores, so the edge's compute bounds it before a fast link does). "
        "*Link allows*: the link rate over the wire bytes one camera needs "
        f"({args.fps:g} × the measured wire bytes per frame, TCP/IP and gRPC included): what "
        "the link alone would hold with an edge that keeps up.",
        "",
        "| link | split latents (split-w100): measured | link allows | JPEG frames (jpeg-q90): "
        "measured | link allows | wire bytes/frame split / JPEG |",
        "|---|---|---|---|---|---|",
    ]
    for rate in args.rate_list:
        cells, per_frame = [], []
        for payload in ("split", "jpeg"):
            runs = [r for r in results if r.rate_mbit == rate and r.payload == payload]
            held = [r.users for r in runs if r.holds]
            failed = [r.users for r in runs if not r.holds]
            if not runs:
                cells.append("—")
            elif held and not failed:
                cells.append(f"≥ {max(held)} (all tested held)")
            else:
                cells.append(f"{max(held) if held else 0} ({min(failed)} did not hold)")
            sizes = [r.wire_bytes_per_frame for r in results if r.payload == payload and r.sent]
            per_frame.append(f"{sum(sizes) / len(sizes):,.0f}" if sizes else "—")
            per_camera = args.fps * 8 * sum(sizes) / len(sizes) if sizes else 0
            cells.append(f"{int(rate * 1e6 // per_camera)}" if per_camera else "—")
        lines.append(f"| {rate:g} Mbit/s | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | "
                     f"{per_frame[0]} / {per_frame[1]} |")  # fmt: skip
    lines += [
        "",
        "## Every run",
        "",
        "| link | payload | cameras | captured | answered OK | rps | p50 ms | p95 ms | p99 ms | "
        "failures by status | edge shed (exhausted / deadline) | edge RSS MB | holds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        failures = ", ".join(f"{k} {v}" for k, v in sorted(r.failures.items())) or "—"
        shed = f"{r.edge_shed.get('resource_exhausted', 0):.0f} / " \
               f"{r.edge_shed.get('deadline_exceeded', 0):.0f}"  # fmt: skip
        lines.append(
            f"| {r.rate_mbit:g} | {r.payload} | {r.users} | {r.offered} | {r.ok} | {r.rps:.1f} | "
            f"{r.p50_ms:.0f} | {r.p95_ms:.0f} | {r.p99_ms:.0f} | {failures} | {shed} | "
            f"{r.edge_rss_mb:.0f} | {'yes' if r.holds else 'no'} |"
        )
    lines += ["", "![cameras](report.png)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    _plot(results, args, out / "report.png")
    return report


def _plot(results: list[RunResult], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for payload, style in (("split", "-o"), ("jpeg", "--s")):
        for rate in args.rate_list:
            runs = sorted(
                (r for r in results if r.rate_mbit == rate and r.payload == payload),
                key=lambda r: r.users,
            )
            if not runs:
                continue
            users = [r.users for r in runs]
            label = f"{payload} @ {rate:g} Mbit/s"
            axes[0].plot(users, [r.ok / r.duration_s / r.users for r in runs], style, label=label)
            axes[1].plot(users, [r.p95_ms for r in runs], style, label=label)
    axes[0].axhline(args.fps * HOLD_FRACTION, color="grey", lw=0.8)
    axes[0].set(xlabel="cameras", ylabel="OK frames/s per camera", xscale="log", title="throughput")
    axes[1].axhline(args.sla_ms, color="red", lw=0.8)
    axes[1].set(xlabel="cameras", ylabel="p95 latency (ms)", xscale="log", yscale="log",
                title="latency of answered frames")  # fmt: skip
    counts = sorted({r.users for r in results})
    for axis in axes:
        axis.set_xticks(counts, [str(c) for c in counts])
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes[1].yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[1].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1,5,20", help="uplink rates, Mbit/s")
    parser.add_argument("--users", default="1,2,4,8,16", help="camera counts, ascending")
    parser.add_argument("--payloads", default="split,jpeg")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--sla-ms", type=float, default=300.0)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "loadtest")
    parser.add_argument("--edge-arg", action="append", default=[],
                        help="extra `splitedge serve` flag, e.g. --edge-arg=--max-batch-size=8")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the report from --out's results.json; run nothing")
    args = parser.parse_args(argv)
    args.argv = ["python", "-m", "loadtest.run", *(argv if argv is not None else sys.argv[1:])]
    args.rate_list = [float(r) for r in args.rates.split(",")]
    if args.report_only:
        saved = json.loads((args.out / "results.json").read_text())
        if isinstance(saved, list):  # written before the command was kept with the runs
            saved = {"command": ["python", "-m", "loadtest.run"], "runs": saved}
        args.argv = saved["command"]
        runs = [RunResult(**r) for r in saved["runs"]]
        print(f"report: {write_report(runs, args, args.out)}")
        return 0
    if os.geteuid() != 0:
        print("loadtest.run needs root: it creates a network namespace and a veth pair and "
              "shapes them with tc. Run `sudo make loadtest` (or as root: make loadtest).",
              file=sys.stderr)  # fmt: skip
        return 2
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        print(f"loadtest.run needs {missing} (apt-get install iproute2)", file=sys.stderr)
        return 2
    user_counts = sorted(int(u) for u in args.users.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    started = time.monotonic()
    with Namespace(str(os.getpid() % 10000)) as ns:
        edge = Edge(ns.host_ip, args.out / "edge.log", args.edge_arg)
        try:
            for rate in args.rate_list:
                args.current_rate = rate
                for warning in shape(ns.ns_dev, LinkSpec(rate_mbit=rate), netns=ns.name):
                    print(f"  note: {warning}", file=sys.stderr)
                for payload in args.payloads.split(","):
                    for users in user_counts:
                        result = run_locust(ns, edge, payload, users, args, args.out)
                        results.append(result)
                        print(
                            f"[{time.monotonic() - started:5.0f} s] {rate:g} Mbit/s {payload:5} "
                            f"{users:3} cameras: {result.ok}/{result.offered} OK, "
                            f"p95 {result.p95_ms:.0f} ms, {result.failures or 'no failures'} → "
                            f"{'holds' if result.holds else 'does not hold'}",
                            flush=True,
                        )
                        if not result.holds:
                            break  # more cameras on the same link and edge would not hold either
        finally:
            edge.stop()
    report = write_report(results, args, args.out)
    print(f"report: {report} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
