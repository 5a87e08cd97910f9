"""Shape a link for real with Linux traffic control: a token bucket (tc tbf) at a rate, optional
netem delay/loss in front of it where the kernel has netem, a rate trace replayed over time.

Two users:

- the compose link shaper (`docker/link.Dockerfile`), sharing a device's network namespace:

      python -m loadtest.netshape run                   # LINK_RATE_MBIT=5, or LINK_TRACE=file.csv
      python -m loadtest.netshape set 0.5               # change the running link now (pins it)
      python -m loadtest.netshape set --unpin           # back to LINK_RATE_MBIT / the trace
      python -m loadtest.netshape show                  # the qdisc and counters (healthcheck)

  `run` applies the rate, replays the trace (`time_s,mbit` rows, looped), picks up `set` within
  half a second, and serves Prometheus text on :9109/metrics (rate, bytes and packets sent,
  drops, backlog): the wire's view of the link, next to the device's own payload counters.

- the throttled-network load runner (`loadtest/run.py`): `shape()` on a veth end in a namespace.

Standard library only (the shaper image holds python and iproute2, nothing else). Needs
CAP_NET_ADMIN in the namespace it shapes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PIN_FILE = Path(os.environ.get("LINK_PIN_FILE", "/run/splitedge-link/pinned"))
TICK_S = 0.5


class ShapingError(RuntimeError):
    """tc refused a command (no CAP_NET_ADMIN, no such device, a qdisc the kernel lacks)."""


@dataclass(frozen=True)
class LinkSpec:
    """One link: rate in Mbit/s; delay and loss need netem (absent from some kernels)."""

    rate_mbit: float
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    queue_ms: float = 200.0  # how long a packet may wait in the token bucket before it is dropped

    def burst_bytes(self) -> int:
        # Small enough to shape closely, large enough for the kernel's timer (HZ) at this rate:
        # 10 ms of tokens, at least two full-size frames.
        return max(3200, int(self.rate_mbit * 1e6 / 8 * 0.010))

    @property
    def wants_netem(self) -> bool:
        return self.delay_ms > 0 or self.loss_pct > 0


def tc(args: Sequence[str], netns: str | None = None) -> str:
    command = ["tc", *args]
    if netns:
        command = ["ip", "netns", "exec", netns, *command]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ShapingError(f"{' '.join(command)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def has_netem() -> bool:
    """Whether this kernel has sch_netem (it is a module many container hosts lack)."""
    modules = Path("/proc/modules")
    if modules.exists() and "sch_netem" in modules.read_text():
        return True
    release = os.uname().release
    return any(Path(f"/lib/modules/{release}").rglob("sch_netem.ko*"))


def shape(dev: str, spec: LinkSpec, netns: str | None = None) -> list[str]:
    """Replace the root qdisc of `dev` by the link `spec`; returns warnings (e.g. netem absent).

    With netem: root netem (delay, loss) → child tbf (rate). Without: root tbf; delay and loss
    are skipped with a warning rather than failing the whole link.
    """
    warnings: list[str] = []
    tbf = [
        "tbf",
        "rate", f"{spec.rate_mbit:.6g}mbit",
        "burst", str(spec.burst_bytes()),
        "latency", f"{spec.queue_ms:g}ms",
    ]  # fmt: skip
    if spec.wants_netem:
        netem = ["netem", "delay", f"{spec.delay_ms:g}ms"]
        if spec.jitter_ms:
            netem.append(f"{spec.jitter_ms:g}ms")
        if spec.loss_pct:
            netem += ["loss", f"{spec.loss_pct:g}%"]
        try:
            tc(["qdisc", "replace", "dev", dev, "root", "handle", "1:", *netem], netns)
            tc(["qdisc", "replace", "dev", dev, "parent", "1:", "handle", "2:", *tbf], netns)
            return warnings
        except ShapingError as exc:
            warnings.append(f"netem unavailable ({exc}); shaping the rate only")
    tc(["qdisc", "replace", "dev", dev, "root", "handle", "1:", *tbf], netns)
    return warnings


def unshape(dev: str, netns: str | None = None) -> None:
    with contextlib.suppress(ShapingError):  # nothing was there
        tc(["qdisc", "del", "dev", dev, "root"], netns)


def qdisc_stats(dev: str, netns: str | None = None) -> dict[str, float]:
    """Drops, overlimits and backlog summed over the qdiscs of `dev` (tc -s -j)."""
    stats = {"drops": 0.0, "overlimits": 0.0, "backlog_bytes": 0.0}
    for qdisc in json.loads(tc(["-s", "-j", "qdisc", "show", "dev", dev], netns) or "[]"):
        stats["drops"] += float(qdisc.get("drops", 0))
        stats["overlimits"] += float(qdisc.get("overlimits", 0))
        stats["backlog_bytes"] += float(qdisc.get("backlog", 0))
    return stats


def read_trace(path: Path) -> list[tuple[float, float]]:
    """A `time_s,mbit` CSV (header optional) → [(seconds from start, Mbit/s)], sorted."""
    rows: list[tuple[float, float]] = []
    with path.open(newline="") as handle:
        for number, row in enumerate(csv.reader(handle), 1):
            if not row or row[0].strip().startswith("#"):
                continue
            try:
                rows.append((float(row[0]), float(row[1])))
            except (ValueError, IndexError):
                if number == 1:
                    continue  # the header
                raise ValueError(f"{path}:{number}: expected time_s,mbit, got {row}") from None
    if not rows or any(rate <= 0 for _, rate in rows):
        raise ValueError(f"{path}: a trace needs rows of time_s,mbit with mbit > 0")
    return sorted(rows)


def rate_at(trace: list[tuple[float, float]], elapsed: float, loop: bool = True) -> float:
    """The trace's rate at `elapsed` seconds (step function; looped past its last row)."""
    period = trace[-1][0] + max(1.0, trace[-1][0] - trace[-2][0] if len(trace) > 1 else 1.0)
    t = elapsed % period if loop else elapsed
    current = trace[0][1]
    for start, rate in trace:
        if start > t:
            break
        current = rate
    return current


# -- the compose shaper ---------------------------------------------------------------------------
@dataclass
class LinkState:
    dev: str
    rate_mbit: float = 0.0
    source: str = "env"  # env | trace | pinned
    warnings: tuple[str, ...] = ()

    def metrics(self) -> str:
        stats = _iface_counters(self.dev)
        qdisc = qdisc_stats(self.dev)
        lines = [
            "# HELP splitedge_link_rate_bits_per_second Shaped uplink rate now",
            "# TYPE splitedge_link_rate_bits_per_second gauge",
            f'splitedge_link_rate_bits_per_second{{source="{self.source}"}} {self.rate_mbit * 1e6}',
            "# HELP splitedge_link_sent_bytes_total Bytes sent on the shaped interface",
            "# TYPE splitedge_link_sent_bytes_total counter",
            f"splitedge_link_sent_bytes_total {stats['tx_bytes']}",
            "# HELP splitedge_link_sent_packets_total Packets sent on the shaped interface",
            "# TYPE splitedge_link_sent_packets_total counter",
            f"splitedge_link_sent_packets_total {stats['tx_packets']}",
            "# HELP splitedge_link_dropped_packets Packets the shaper dropped (resets on change)",
            "# TYPE splitedge_link_dropped_packets gauge",
            f"splitedge_link_dropped_packets {qdisc['drops']}",
            "# HELP splitedge_link_backlog_bytes Bytes queued in the shaper",
            "# TYPE splitedge_link_backlog_bytes gauge",
            f"splitedge_link_backlog_bytes {qdisc['backlog_bytes']}",
        ]
        return "\n".join(lines) + "\n"


def _iface_counters(dev: str) -> dict[str, float]:
    root = Path("/sys/class/net") / dev / "statistics"
    return {name: float((root / name).read_text()) for name in ("tx_bytes", "tx_packets")}


def _env_spec(rate_mbit: float) -> LinkSpec:
    env = os.environ
    return LinkSpec(
        rate_mbit=rate_mbit,
        delay_ms=float(env.get("LINK_DELAY_MS", 0)),
        jitter_ms=float(env.get("LINK_JITTER_MS", 0)),
        loss_pct=float(env.get("LINK_LOSS_PCT", 0)),
        queue_ms=float(env.get("LINK_QUEUE_MS", 200)),
    )


def _pinned() -> float | None:
    try:
        return float(PIN_FILE.read_text().strip())
    except (OSError, ValueError):
        return None


def _serve_metrics(state: LinkState, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = state.metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()


def run(dev: str) -> int:
    env = os.environ
    trace_path = env.get("LINK_TRACE") or None
    trace = read_trace(Path(trace_path)) if trace_path else None
    fixed = float(env.get("LINK_RATE_MBIT", 5))
    state = LinkState(dev)
    _serve_metrics(state, int(env.get("LINK_METRICS_PORT", 9109)))
    PIN_FILE.parent.mkdir(parents=True, exist_ok=True)
    PIN_FILE.unlink(missing_ok=True)
    started = time.monotonic()
    applied: float | None = None
    print(json.dumps({"event": "link", "dev": dev, "trace": trace_path, "rate_mbit": fixed,
                      "netem": has_netem()}), flush=True)  # fmt: skip
    while True:
        pinned = _pinned()
        if pinned is not None:
            rate, source = pinned, "pinned"
        elif trace is not None:
            rate, source = rate_at(trace, time.monotonic() - started), "trace"
        else:
            rate, source = fixed, "env"
        if rate != applied:
            state.warnings = tuple(shape(dev, _env_spec(rate)))
            applied, state.rate_mbit, state.source = rate, rate, source
            print(json.dumps({"event": "rate", "mbit": rate, "source": source,
                              "warnings": list(state.warnings)}), flush=True)  # fmt: skip
        time.sleep(TICK_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netshape", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", default=os.environ.get("LINK_DEV", "eth0"))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="shape by LINK_RATE_MBIT or LINK_TRACE; serve :9109/metrics")
    setter = commands.add_parser("set", help="pin the running link to a rate (Mbit/s) now")
    setter.add_argument("rate_mbit", type=float, nargs="?")
    setter.add_argument("--unpin", action="store_true", help="back to the env rate / the trace")
    commands.add_parser("show", help="print the qdisc with its counters")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return run(args.dev)
        if args.command == "set":
            if args.unpin:
                PIN_FILE.unlink(missing_ok=True)
            elif args.rate_mbit is None or args.rate_mbit <= 0:
                parser.error("set takes a rate in Mbit/s > 0 (or --unpin)")
            else:
                PIN_FILE.parent.mkdir(parents=True, exist_ok=True)
                PIN_FILE.write_text(f"{args.rate_mbit}\n")
            return 0
        out = tc(["-s", "qdisc", "show", "dev", args.dev])
        print(out, end="")
        return 0 if "tbf" in out else 1  # unhealthy until the link is shaped
    except (ShapingError, ValueError, OSError) as exc:
        print(f"netshape: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
