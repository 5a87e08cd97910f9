"""Head figures per teacher: what the device pays for each width, against running everything.

    python -m benchmarks.heads [--teachers tiny_fasterrcnn,resnet50] [--repeats 5]

For each teacher (random init, default split, 12-channel latent, widths 0.25..1.0) it exports a
bundle to a temporary directory and prints, as JSON on stdout, in one run on this machine:
head params and MACs vs the full teacher; head latency (onnxruntime, 1 and 2 threads) per width
vs local.onnx and vs the prefilter graph alone; latent elements and entropy-coded bytes per frame
per width; the time to switch width vs the time to load another head session. The frame is a
480x640 synthetic picture (random init makes the bytes only indicative; trained models differ).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from device_client.head import HeadRunner, make_session
from device_client.local import LocalRunner
from shared.bundle import load_bundle
from split_models.export import export_bundle
from split_models.split import SplitConfig, build_student
from split_models.teachers import TEACHERS, build_teacher, teacher_spec

EXPORTABLE = [n for n in TEACHERS if n != "ssdlite320_mobilenet_v3_large"]  # see export.py


def frame(height: int = 480, width: int = 640) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    return (image // 2 + rng.integers(0, 128, image.shape)).astype(np.uint8)


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times), 3)


def macs(module: torch.nn.Module, *args: Any) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*args)
    return int(counter.get_total_flops() // 2)


def bench_teacher(name: str, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    teacher = build_teacher(name)
    task = teacher_spec(name).task
    student = build_student({task: (name, teacher)}, SplitConfig())
    sample = frame()
    with tempfile.TemporaryDirectory() as tmp:
        root = export_bundle(student, {task: (name, teacher)}, Path(tmp) / name, name=name,
                             sample=sample, repeats=1)
        bundle = load_bundle(root)
        runner = HeadRunner(bundle)
        head_input = runner.preprocess(sample)
        image = torch.from_numpy(head_input.image)
        if task == "detection":
            full_macs = macs(teacher, [torch.from_numpy(sample).permute(2, 0, 1) / 255.0])
        else:
            full_macs = macs(teacher, student.head.normalize(image))
        report: dict[str, Any] = {
            "teacher": name,
            "input": list(head_input.geometry.padded),
            "head_params": sum(p.numel() for p in student.head.parameters()),
            "full_params": sum(p.numel() for p in teacher.parameters()),
            "full_macs": full_macs,
            "widths": {},
        }
        for threads in (1, 2):
            timed = HeadRunner(bundle, threads=threads)
            local = LocalRunner(bundle, threads=threads)
            run_local = partial(local.detect if task == "detection" else local.classify, sample)
            report[f"local_ms_{threads}t"] = median_ms(run_local, repeats)
            report[f"prefilter_ms_{threads}t"] = median_ms(
                partial(timed.prefilter, head_input.image), repeats)
            for width in timed.widths:
                timed.set_width(width)
                entry = report["widths"].setdefault(str(width), {})
                entry[f"head_ms_{threads}t"] = median_ms(partial(timed.head, head_input.image),
                                                         repeats)
        for width in runner.widths:
            runner.set_width(width)
            student.set_width(width)
            latent, _ = runner.head(head_input.image)
            entry = report["widths"][str(width)]
            entry["head_macs"] = macs(student.head, image)
            entry["latent_elements"] = int(latent.size)
            entry["bytes"] = runner.codec.encode(latent).nbytes
            entry["encode_ms"] = median_ms(partial(runner.codec.encode, latent), repeats)
        head_path = bundle.path(bundle.manifest.heads[0].file)
        start = time.perf_counter()
        for _ in range(1000):
            runner.set_width(runner.widths[0])
        report["switch_width_us"] = round((time.perf_counter() - start) * 1e3, 3)  # per call
        report["load_head_session_ms"] = median_ms(lambda: make_session(head_path), repeats)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", default=",".join(EXPORTABLE))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = [bench_teacher(n, args.repeats) for n in args.teachers.split(",")]
    print(json.dumps({"machine": platform.processor() or platform.machine(),
                      "cpus": __import__("os").cpu_count(), "teachers": results}, indent=1))


if __name__ == "__main__":
    main()
