"""The x86 half of `scripts/emulated_pi.sh`: checks an arm64 root that has the device extra.

    .venv/bin/python scripts/emulated_pi.py --root /var/tmp/splitedge-arm64 [--frames 30]

1. Bitstream across architectures: symbols (real latents of the shipped bundle at every width,
   plus outliers that take the escape path) are ANS-coded on arm64 by the pure-Python coder and
   decoded on x86 by constriction, and the other way round; the words must be identical and every
   decode must give back the same symbols.
2. The coder benchmark (`benchmarks/ans.py`) under emulation beside the same run on x86.
3. The device daemon on arm64 (a folder of generated frames, the bundle downloaded from the edge)
   against `splitedge serve` on x86 over loopback, and the same frames by an x86 device: every
   frame one outcome on both, the same kinds, the same bytes and the same detections.
Prints one JSON object; exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from splitedge.demo import make_clip  # noqa: E402
from splitedge.process import SplitedgeProcess  # noqa: E402

BUNDLE = ROOT / "bundles" / "demo-shapes"
IN_ROOT = Path("/opt/run")  # the work folder as the arm64 side sees it
ARM_PYTHON = "/opt/venv/bin/python"

# Runs inside the arm64 root with the device install only (no constriction there).
ARM_CODER = """
import json, sys, numpy as np
from shared.codecs import FactorizedAnsCodec, FactorizedTables, Payload, CodecId
from shared.codecs.ans import constriction_available
run = sys.argv[1]
codec = FactorizedAnsCodec(FactorizedTables.load(sys.argv[2]), backend="python")
with np.load(f"{run}/symbols.npz") as data:
    symbols = [data[k] for k in sorted(data.files)]
words, escapes = {}, {}
for i, s in enumerate(symbols):
    p = codec.encode_symbols(s)
    words[f"{i:03d}"] = np.frombuffer(p.strings[0], dtype="<u4")
    escapes[f"{i:03d}"] = np.frombuffer(p.strings[1], dtype=np.uint8)
np.savez(f"{run}/arm_words.npz", **words)
np.savez(f"{run}/arm_escapes.npz", **escapes)
decoded = {}
with np.load(f"{run}/x86_words.npz") as w, np.load(f"{run}/x86_escapes.npz") as e:
    for i, s in enumerate(symbols):
        k = f"{i:03d}"
        payload = Payload(CodecId.FACTORIZED_ANS, s.shape, (w[k].tobytes(), e[k].tobytes()))
        decoded[k] = codec.decode_symbols(payload)
np.savez(f"{run}/arm_decoded.npz", **decoded)
print(json.dumps({"constriction_on_arm": constriction_available()}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--install-seconds", type=float, default=None)
    parser.add_argument("--venv-mb", type=float, default=None)
    args = parser.parse_args()
    run = args.root / IN_ROOT.relative_to("/")
    run.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "arm64_install": {"seconds": args.install_seconds, "venv_mb": args.venv_mb},
    }
    report["bitstream"] = bitstream(args.root, run)
    report["coder_benchmark"] = coder_benchmark(args.root)
    report["daemon"] = daemon(args.root, run, args.frames)
    ok = report["bitstream"]["ok"] and report["daemon"]["ok"]
    report["ok"] = ok
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


def in_root(root: Path, *command: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "chroot",
            str(root),
            "/usr/bin/env",
            "-i",
            "PATH=/opt/venv/bin:/usr/bin:/bin",
            "HOME=/root",
            "sh",
            "-c",
            "cd /opt/splitedge && exec " + " ".join(command),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def bitstream(root: Path, run: Path) -> dict[str, Any]:
    from shared.codecs import CodecId, FactorizedAnsCodec, FactorizedTables, Payload
    from shared.codecs.ans import constriction_available

    tables = FactorizedTables.load(BUNDLE / "entropy.npz")
    backend = "constriction" if constriction_available() else "python"
    x86 = FactorizedAnsCodec(tables, backend=backend)
    symbols = real_symbols(x86) + outlier_symbols(tables.channels)
    np.savez(run / "symbols.npz", **{f"{i:03d}": s for i, s in enumerate(symbols)})
    payloads = [x86.encode_symbols(s) for s in symbols]
    np.savez(
        run / "x86_words.npz",
        **{f"{i:03d}": np.frombuffer(p.strings[0], "<u4") for i, p in enumerate(payloads)},
    )
    np.savez(
        run / "x86_escapes.npz",
        **{f"{i:03d}": np.frombuffer(p.strings[1], np.uint8) for i, p in enumerate(payloads)},
    )
    (run / "arm_coder.py").write_text(ARM_CODER)
    start = time.monotonic()
    done = in_root(
        root,
        ARM_PYTHON,
        str(IN_ROOT / "arm_coder.py"),
        str(IN_ROOT),
        "bundles/demo-shapes/entropy.npz",
    )
    arm_seconds = time.monotonic() - start
    if done.returncode:
        return {"ok": False, "error": done.stderr[-2000:]}
    arm_info = json.loads(done.stdout.strip().splitlines()[-1])
    same_words = arm_decoded_ok = x86_decoded_ok = 0
    with (
        np.load(run / "arm_words.npz") as words,
        np.load(run / "arm_escapes.npz") as escapes,
        np.load(run / "arm_decoded.npz") as decoded,
    ):
        for i, (s, p) in enumerate(zip(symbols, payloads, strict=True)):
            k = f"{i:03d}"
            arm_payload = Payload(
                CodecId.FACTORIZED_ANS, s.shape, (words[k].tobytes(), escapes[k].tobytes())
            )
            same_words += arm_payload.strings == p.strings
            x86_decoded_ok += np.array_equal(x86.decode_symbols(arm_payload), s)
            arm_decoded_ok += np.array_equal(decoded[k], s)
    n = len(symbols)
    return {
        "latents": n,
        "symbols": int(sum(s.size for s in symbols)),
        "escaped_symbols": int(
            sum(
                (
                    (s - tables.offset[: s.shape[0], None, None] < 0)
                    | (
                        s - tables.offset[: s.shape[0], None, None]
                        >= (tables.cdf_length[: s.shape[0]] - 2)[:, None, None]
                    )
                ).sum()
                for s in symbols
            )
        ),
        "x86_coder": x86.backend,
        "arm_coder": "python",
        "constriction_on_arm": arm_info["constriction_on_arm"],
        "identical_words": f"{same_words}/{n}",
        "arm_encoded_decoded_on_x86": f"{x86_decoded_ok}/{n}",
        "x86_encoded_decoded_on_arm": f"{arm_decoded_ok}/{n}",
        "arm_seconds": round(arm_seconds, 1),
        "ok": same_words == x86_decoded_ok == arm_decoded_ok == n,
    }


def real_symbols(codec: Any) -> list[np.ndarray]:
    from device_client.config import GeneratedSource
    from device_client.head import HeadRunner
    from device_client.sources import ShapesGenerator

    runner = HeadRunner.load(BUNDLE, threads=1)
    generator = ShapesGenerator(GeneratedSource(kind="generated", empty_run=2, object_run=3))
    out = []
    for width in runner.widths:
        runner.set_width(width)
        for i in range(4):
            latent, _ = runner.head(runner.preprocess(generator.frame(i)).image)
            out.append(codec.quantize(latent))
    return out


def outlier_symbols(channels: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(4):
        s = rng.integers(-3, 4, size=(channels, 8, 10)).astype(np.int32)
        mask = rng.random(s.shape) < 0.05
        s[mask] = rng.integers(-(2**31), 2**31 - 1, size=int(mask.sum()))
        out.append(s)
    return out


def coder_benchmark(root: Path) -> dict[str, Any]:
    def python_ms(result: subprocess.CompletedProcess[str]) -> dict[str, float]:
        widths = json.loads(result.stdout)["widths"]
        return {k: widths["1.0"]["python"][f"{k}_ms"] for k in ("encode", "decode")}

    command = ("-m", "benchmarks.ans", "--frames", "4", "--repeats", "2")
    x86 = subprocess.run(
        [sys.executable, *command], cwd=ROOT, capture_output=True, text=True, check=True
    )
    arm = in_root(root, ARM_PYTHON, *command)
    if arm.returncode:
        return {"error": arm.stderr[-2000:]}
    x86_ms, arm_ms = python_ms(x86), python_ms(arm)
    x86_row = json.loads(x86.stdout)["widths"]["1.0"]
    return {
        "python_coder_ms_per_frame_x86": x86_ms,
        "python_coder_ms_per_frame_emulated_arm64": arm_ms,
        "emulation_slowdown": {k: round(arm_ms[k] / x86_ms[k], 1) for k in arm_ms},
        "constriction_ms_per_frame_x86": {
            k: x86_row.get("constriction", {}).get(f"{k}_ms") for k in ("encode", "decode")
        },
        "arm64_widths": json.loads(arm.stdout)["widths"],
    }


def daemon(root: Path, run: Path, frames: int) -> dict[str, Any]:
    frames_dir = run / "frames"
    for old in frames_dir.glob("*.png"):
        old.unlink()
    paths = make_clip(frames_dir, frames, seed=11)
    edge = SplitedgeProcess(
        [
            "serve",
            "--bundle",
            str(BUNDLE),
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--max-batch-size",
            "1",
        ],
        run / "edge.log",
    ).start()
    try:
        ports = edge.wait_for("ready")["listening"]
        results = {}
        for side, base in (("x86", run), ("arm64", IN_ROOT)):
            config = device_config(side, base, ports)
            (run / f"{side}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            outcomes = run / f"{side}-outcomes.jsonl"
            outcomes.unlink(missing_ok=True)
            start = time.monotonic()
            if side == "x86":
                device = SplitedgeProcess(
                    ["device", "run", "--config", str(run / "x86.yaml")], run / "x86-device.log"
                ).start()
                code = device.wait(timeout=600)
            else:
                done = in_root(
                    root,
                    "/opt/venv/bin/splitedge",
                    "device",
                    "run",
                    "--config",
                    str(IN_ROOT / "arm64.yaml"),
                )
                (run / "arm64-device.log").write_text(done.stdout + done.stderr)
                code = done.returncode
            records = [json.loads(line) for line in outcomes.read_text().splitlines()]
            results[side] = {
                "exit_code": code,
                "seconds": round(time.monotonic() - start, 1),
                "records": records,
            }
    finally:
        edge.stop()
    return compare(results, len(paths))


def device_config(side: str, base: Path, ports: dict[str, Any]) -> dict[str, Any]:
    return {
        "device_id": f"emulated-{side}",
        "state_dir": str(base / f"state-{side}"),
        "bundle": {"url": f"http://127.0.0.1:{ports['http_port']}", "name": "demo-shapes"},
        # Under qemu-user onnxruntime runs the head in tens of seconds (thousands of times the
        # board's time): a ten-minute SLA keeps the comparison about results, not about qemu's
        # speed; one frame in flight keeps the edge's batches at one frame.
        "edge": {"target": f"127.0.0.1:{ports['grpc_port']}", "sla_ms": 600_000, "window": 1},
        "source": {"kind": "folder", "path": str(base / "frames"), "pattern": "*.png"},
        "pipeline": {"threads": 1, "prefilter": {"enabled": True, "gate": True}},
        "sinks": [{"kind": "file", "path": str(base / f"{side}-outcomes.jsonl")}],
        "metrics": {"enabled": False},
    }


def compare(results: dict[str, Any], frames: int) -> dict[str, Any]:
    by_side = {
        side: {r["frame_id"]: r for r in result["records"]} for side, result in results.items()
    }
    summary: dict[str, Any] = {"frames": frames}
    for side, result in results.items():
        ids = sorted(r["frame_id"] for r in result["records"])
        kinds: dict[str, int] = {}
        for r in result["records"]:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        summary[side] = {
            "exit_code": result["exit_code"],
            "seconds": result["seconds"],
            "outcomes": len(ids),
            "every_frame_one_outcome": ids == list(range(frames)),
            "kinds": kinds,
            "mean_bytes_sent": round(
                float(np.mean([r["bytes_sent"] for r in result["records"]] or [0])), 1
            ),
            "device_ms_p50": {
                stage: round(float(np.median(values)), 1)
                for stage in ("prefilter", "head", "encode", "total")
                if (
                    values := [
                        r["timings_ms"][stage]
                        for r in result["records"]
                        if stage in r["timings_ms"]
                    ]
                )
            },
        }
    x86, arm = by_side["x86"], by_side["arm64"]
    common = sorted(set(x86) & set(arm))
    same_kind = sum(x86[i]["kind"] == arm[i]["kind"] for i in common)
    same_bytes = sum(x86[i]["bytes_sent"] == arm[i]["bytes_sent"] for i in common)
    same_detections = sum(detections_match(x86[i], arm[i]) for i in common)
    summary["same_kind"] = f"{same_kind}/{frames}"
    summary["same_bytes_sent"] = f"{same_bytes}/{frames}"
    summary["same_detections"] = f"{same_detections}/{frames}"
    summary["ok"] = (
        all(
            summary[s]["every_frame_one_outcome"] and summary[s]["exit_code"] == 0
            for s in ("x86", "arm64")
        )
        and same_kind == same_detections == frames
    )
    return summary


def detections_match(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same labels, boxes within a pixel, scores within 0.01 (onnxruntime's NEON and AVX kernels
    round differently, so a latent can land on the other side of a quantization step)."""
    da = sorted(a["detections"], key=lambda d: (-d["score"], d["label_id"]))
    db = sorted(b["detections"], key=lambda d: (-d["score"], d["label_id"]))
    strong_a = [d for d in da if d["score"] >= 0.5]
    strong_b = [d for d in db if d["score"] >= 0.5]
    if len(strong_a) != len(strong_b):
        return False
    return all(
        x["label_id"] == y["label_id"]
        and abs(x["score"] - y["score"]) <= 0.01
        and max(abs(p - q) for p, q in zip(x["box"], y["box"], strict=True)) <= 1.0
        for x, y in zip(strong_a, strong_b, strict=True)
    )


if __name__ == "__main__":
    sys.exit(main())
