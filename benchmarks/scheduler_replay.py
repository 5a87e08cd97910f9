"""Why the adaptive policy chose what it chose: a harness run's outcomes replayed through a fresh
policy, and one branch's predicted latency taken apart after every edge reply.

    .venv/bin/python -m benchmarks.scheduler_replay out/scheduler/bursty/adaptive/outcomes.jsonl \\
        --branch split-w025 --after-frame 200

The daemon's `outcomes.jsonl` holds every frame's timings and the edge's stage times, which is
all the policy learns from (`AdaptivePolicy.observe`). Fed back in the order the frames settled,
they rebuild its estimates without a network, a device or an edge; the printed prediction is the
one the policy compared with SLA ÷ margin (it matches the run's `decision.predicted_ms` up to the
order in which concurrent replies settled). Per reply: the prediction, the part the throughput
adds, and the (mean, deviation) of this device's cost, the round trip, the edge's queue and the
branch's decode + tail. `--set key=value` changes a scheduler setting for the replay (as
`benchmarks.scheduler --scheduler`), to see what another rule would have predicted on the same
samples.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from device_client.config import SchedulerConfig
from device_client.outcomes import Outcome
from device_client.scheduler import AdaptivePolicy
from shared.bundle import Manifest, load_bundle
from shared.results import ServerTimings

ROOT = Path(__file__).resolve().parents[1]


def outcome(record: dict[str, Any]) -> Outcome:
    server = record.get("server_ms")
    return Outcome(
        record["frame_id"],
        record["kind"],
        record["capture_time_unix_ns"],
        record["reason"],
        record["branch"],
        record["timings_ms"],
        record["bytes_sent"],
        server=ServerTimings(server["queue_wait"], server["decode"], server["tail"],
                             server["total"], server["batch_size"]) if server else None,
    )


def replay(
    records: Iterable[dict[str, Any]],
    manifest: Manifest,
    scheduler: SchedulerConfig,
    branch: str,
    after_frame: int = 0,
    sla_ms: float = 300.0,
    fps: float = 15.0,
) -> list[dict[str, Any]]:
    """One row per edge reply from `after_frame` on: `branch`'s predicted latency and its terms."""
    policy = AdaptivePolicy(manifest, scheduler, sla_ms=sla_ms, fps=fps, clock=lambda: 0.0)
    spec = next((b for b in policy.branches if b.id == branch), None)
    if spec is None:
        raise SystemExit(f"{branch} is not a branch the policy may choose: "
                         f"{[b.id for b in policy.branches]}")
    settled = sorted(records, key=lambda r: r["capture_time_unix_ns"] / 1e9
                     + r["timings_ms"].get("total", 0.0) / 1e3)
    rows = []
    for record in settled:
        policy.observe(outcome(record))
        if record["frame_id"] < after_frame or record["kind"] != "edge":
            continue
        transfer, rest, _ = policy.latency_terms(spec)
        link = policy.link.estimate()
        queue, compute = policy.edge.terms(spec.id, spec.edge_ms)
        rows.append({
            "frame_id": record["frame_id"],
            "replied_on": record["branch"],
            "probe": bool((record.get("decision") or {}).get("probe")),
            "predicted_ms": round(transfer + rest, 1),
            "budget_ms": round(sla_ms / scheduler.margin, 1),
            "transfer_ms": round(transfer, 1),
            "link_mbit": round(link.throughput_mbit, 3),
            "device": _pair(policy.device.term(spec.id, spec.device_ms)),
            "rtt": _pair((link.rtt_mean_ms, link.rtt_deviation_ms)),
            "edge_queue": _pair(queue),
            "edge_compute": _pair(compute),
        })
    return rows


def _pair(term: tuple[float, float]) -> tuple[float, float]:
    return round(term[0], 1), round(term[1], 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outcomes", type=Path, help="a run's outcomes.jsonl")
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "demo-shapes")
    parser.add_argument("--branch", required=True, help="the branch whose prediction to show")
    parser.add_argument("--after-frame", type=int, default=0)
    parser.add_argument("--sla-ms", type=float, default=300)
    parser.add_argument("--fps", type=float, default=15)
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="a scheduler setting for the replay")
    args = parser.parse_args()
    settings = {}
    for text in args.settings:
        key, _, value = text.partition("=")
        settings[key] = yaml.safe_load(value)
    records = [json.loads(line) for line in args.outcomes.read_text().splitlines() if line]
    rows = replay(records, load_bundle(args.bundle).manifest, SchedulerConfig(**settings),
                  args.branch, args.after_frame, args.sla_ms, args.fps)
    print("| frame | replied on | predicted ms | budget | transfer ms | Mbit/s | device | "
          "round trip | edge queue | edge decode + tail |")
    print("|---:|---|---:|---:|---:|---:|---|---|---|---|")
    for r in rows:
        terms = " | ".join(f"{m} ± {d}" for m, d in
                           (r["device"], r["rtt"], r["edge_queue"], r["edge_compute"]))
        probe = " (probe)" if r["probe"] else ""
        print(f"| {r['frame_id']} | {r['replied_on']}{probe} | {r['predicted_ms']} | "
              f"{r['budget_ms']} | {r['transfer_ms']} | {r['link_mbit']} | {terms} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
