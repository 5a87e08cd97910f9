"""Uplink traces for `benchmarks/scheduler.py`: CSV `time_s,mbit`, one row per second.

    python -m benchmarks.traces [--out benchmarks/traces --seconds 120 --seed 7]

Writes the three shipped traces:
- `steady-high.csv`: 20 Mbit/s throughout;
- `steady-low.csv`: 0.5 Mbit/s throughout;
- `bursty.csv`: a Markov chain over LTE-like uplink rates. Each second the link stays in its
  state with probability 0.8, else moves to a neighbouring state (one step up or down the ladder
  0.3 → 1 → 3 → 8 → 20 Mbit/s); inside a state the rate varies ±20 % (log-normal, σ 0.1); with
  probability 0.03 a second is an outage (0.02 Mbit/s: handover, a tunnel), which lasts 1–3 s.
  Deterministic by seed. The shape follows what cellular uplink traces show: long plateaus,
  steps between them, and short dropouts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

LADDER = (0.3, 1.0, 3.0, 8.0, 20.0)
OUTAGE_MBIT = 0.02


def bursty(seconds: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    state = 3
    outage_left = 0
    rates = []
    for _ in range(seconds):
        if outage_left:
            outage_left -= 1
            rates.append(OUTAGE_MBIT)
            continue
        if rng.random() < 0.03:
            outage_left = int(rng.integers(0, 3))
            rates.append(OUTAGE_MBIT)
            continue
        if rng.random() > 0.8:
            state = int(np.clip(state + rng.choice((-1, 1)), 0, len(LADDER) - 1))
        rates.append(float(LADDER[state] * rng.lognormal(0.0, 0.1)))
    return rates


def write(path: Path, rates: list[float]) -> None:
    rows = ["time_s,mbit"] + [f"{t},{r:.3f}" for t, r in enumerate(rates)]
    path.write_text("\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "traces")
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "steady-high.csv", [20.0] * args.seconds)
    write(args.out / "steady-low.csv", [0.5] * args.seconds)
    write(args.out / "bursty.csv", bursty(args.seconds, args.seed))
    print(f"wrote steady-high.csv, steady-low.csv, bursty.csv to {args.out}")


if __name__ == "__main__":
    main()
