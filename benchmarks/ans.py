"""The device's entropy coders on real latents: speed, bytes against the ideal, same words.

    python -m benchmarks.ans [--bundle bundles/demo-shapes --frames 20 --repeats 5]

Torch-free, so it runs on a device install (a Raspberry Pi, the emulated Pi root of
`scripts/emulated_pi.sh`) as well as here. Latents are the bundle's own: generated frames through
the head ONNX at every width. For each coder available on this machine — the pure-Python one
always, constriction where its wheel installs — it prints encode/decode ms per frame, MB/s of
symbols (int32 in), bytes per frame and the overhead over the ideal size (the symbols'
information content under the prior; escaped symbols cost their overflow entry), and checks that
the coders wrote the same words. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from typing import Any

import numpy as np

from device_client.config import GeneratedSource
from device_client.head import HeadRunner
from device_client.sources import frame_generator
from shared.codecs import FactorizedAnsCodec, FactorizedTables
from shared.codecs.ans import constriction_available


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="bundles/demo-shapes")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    runner = HeadRunner.load(args.bundle, threads=1)
    tables = FactorizedTables.load(runner.bundle.path(runner.bundle.manifest.entropy_file))
    generator = frame_generator(GeneratedSource(kind="generated", empty_run=0))  # benchmark scenes
    frames = [runner.preprocess(generator.frame(i)).image for i in range(args.frames)]
    backends = ["python"] + (["constriction"] if constriction_available() else [])
    coders = {b: FactorizedAnsCodec(tables, backend=b) for b in backends}  # type: ignore[arg-type]
    pmf = tables.pmfs()

    widths: dict[str, Any] = {}
    for width in runner.widths:
        runner.set_width(width)
        symbols = [coders["python"].quantize(runner.head(image)[0]) for image in frames]
        ideal = statistics.fmean(_ideal_bytes(s, tables, pmf) for s in symbols)
        row: dict[str, Any] = {"symbols": int(symbols[0].size), "ideal_bytes": round(ideal, 1)}
        words: dict[str, list[bytes]] = {}
        for name, codec in coders.items():
            enc_ms, payloads = _timed(
                lambda c=codec, sy=symbols: [c.encode_symbols(s) for s in sy], args
            )
            dec_ms, decoded = _timed(
                lambda c=codec, p=payloads: [c.decode_symbols(x) for x in p], args
            )
            assert all(np.array_equal(a, b) for a, b in zip(decoded, symbols, strict=True))
            words[name] = [p.strings[0] for p in payloads]
            nbytes = statistics.fmean(p.nbytes for p in payloads)
            mb = symbols[0].size * 4 / 1e6
            row[name] = {
                "encode_ms": round(enc_ms / len(frames), 3),
                "decode_ms": round(dec_ms / len(frames), 3),
                "encode_MBps_symbols": round(mb / (enc_ms / len(frames) / 1e3), 1),
                "decode_MBps_symbols": round(mb / (dec_ms / len(frames) / 1e3), 1),
                "bytes": round(nbytes, 1),
                "overhead_vs_ideal_pct": round((nbytes / ideal - 1) * 100, 2),
            }
        if len(words) == 2:
            row["same_words"] = words["python"] == words["constriction"]
            row["python_slowdown"] = {
                k: round(row["python"][f"{k}_ms"] / row["constriction"][f"{k}_ms"], 1)
                for k in ("encode", "decode")
            }
        widths[str(width)] = row

    report = {
        "machine": {
            "arch": platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "frames": len(frames),
        "coders": backends,
        "widths": widths,
    }
    json.dump(report, sys.stdout, indent=2)
    print()


def _timed(fn: Any, args: argparse.Namespace) -> tuple[float, Any]:
    """Median wall ms over `repeats` runs after one warm-up, and the last result."""
    result = fn()
    samples = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples), result


def _ideal_bytes(symbols: np.ndarray, tables: FactorizedTables, pmf: list[np.ndarray]) -> float:
    bits = 0.0
    for c in range(symbols.shape[0]):
        index = symbols[c].ravel() - tables.offset[c]
        overflow = len(pmf[c]) - 1
        index = np.where((index < 0) | (index >= overflow), overflow, index)
        bits += float(-np.log2(pmf[c][index]).sum())
    return bits / 8


if __name__ == "__main__":
    main()
