"""The model tools behind `splitedge dataset|train|eval|export`:

    splitedge dataset generate --out data/shapes --seed 0 --train 4000 --val 200 --test 200
    splitedge dataset generate --out data/shapes-shifted --styles shifted --train 0 --val 0
    splitedge dataset video --out data/shapes/video.mp4 --seed 1 --frames 120
    splitedge train configs/demo-shapes/teacher-det.yaml [--set student.rate_lambda=0.04]
    splitedge eval --bundle bundles/demo-shapes --data data/shapes/test.json \
        --data data/shapes-shifted/test.json --out reports/x
    splitedge export --teacher detection=tiny_fasterrcnn --name demo --out bundles/demo
                                (= python -m split_models export ...)

Training resumes from the run directory's checkpoints by default (`--fresh` starts over).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from split_models.teachers import TEACHERS


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="splitedge")
    commands = parser.add_subparsers(dest="command", required=True)

    dataset = commands.add_parser("dataset", help="generate the shapes benchmark")
    kinds = dataset.add_subparsers(dest="what", required=True)
    generate = kinds.add_parser("generate", help="COCO-format train/val/test splits")
    generate.add_argument("--out", type=Path, required=True)
    generate.add_argument("--seed", type=int, default=0)
    for split, count in (("train", 1600), ("val", 200), ("test", 200)):
        generate.add_argument(f"--{split}", type=int, default=count, help=f"frames ({count})")
    generate.add_argument("--height", type=int, default=240)
    generate.add_argument("--width", type=int, default=320)
    generate.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                          help="processes drawing frames (the same bytes for any number)")
    generate.add_argument("--styles", choices=("train", "shifted"), default="train",
                          help="shifted: only the held-out style families (the shifted test set)")
    generate.add_argument("--extra-backgrounds", nargs="+", default=[], metavar="FAMILY",
                          help="also draw these background families (styles.EXTRA_BACKGROUNDS; "
                               "off in the recipe)")
    video = kinds.add_parser("video", help="a short clip of moving objects (.npz, + .mp4)")
    video.add_argument("--out", type=Path, required=True, help="file.npz or file.mp4")
    video.add_argument("--seed", type=int, default=1)
    video.add_argument("--frames", type=int, default=120)
    video.add_argument("--objects", type=int, default=3)

    train = commands.add_parser("train", help="run one experiment config (YAML)")
    train.add_argument("config", type=Path)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument("--fresh", action="store_true", help="discard the run's checkpoints")

    evaluate = commands.add_parser("eval", help="rate–accuracy report of bundles + baselines")
    evaluate.add_argument("--bundle", type=Path, action="append", required=True,
                          help="repeatable: a bundle directory")
    evaluate.add_argument("--data", type=Path, action="append", required=True,
                          help="repeatable: a COCO .json test set (in-distribution first; the "
                               "report puts the sets side by side)")
    evaluate.add_argument("--out", type=Path, required=True)
    evaluate.add_argument("--limit", type=int, default=None, help="first N frames only")
    evaluate.add_argument("--qualities", default="5,10,20,30,50,70,90,95,100")
    evaluate.add_argument("--write-manifest", action="store_true",
                          help="write the first set's accuracies into the first bundle's "
                               "manifest (never done otherwise)")
    evaluate.add_argument("--threads", type=int, default=2)
    export = commands.add_parser("export", help="export a split model to a bundle directory")
    export.add_argument(
        "--teacher", action="append", required=True, metavar="[TASK=]NAME[@WEIGHTS]",
        help=f"repeatable; the first gives the head. Names: {', '.join(TEACHERS)}",
    )
    export.add_argument("--name", required=True)
    export.add_argument("--version", default="0")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--latent-channels", type=int, default=12)
    export.add_argument("--widths", default="0.25,0.5,0.75,1.0")
    export.add_argument("--encoder-stride", type=int, default=2)
    export.add_argument("--inner-channels", type=int, default=64)
    export.add_argument("--prefilter-threshold", type=float, default=0.0)
    export.add_argument("--student", type=Path, help="state dict of a trained student")
    export.add_argument("--seed", type=int, default=0)
    parsed = parser.parse_args(args)

    if parsed.command == "export":
        return _export(parsed)
    if parsed.command == "dataset":
        return _dataset(parsed)
    if parsed.command == "train":
        return _train(parsed)
    from split_models.evaluation.report import run_report

    torch.set_num_threads(parsed.threads)
    report = run_report(parsed.bundle, parsed.data, parsed.out, limit=parsed.limit,
                        qualities=[int(q) for q in parsed.qualities.split(",")],
                        write_manifest=parsed.write_manifest)
    print(report)
    return 0


def _export(parsed: argparse.Namespace) -> int:
    """Build teachers, split them and export a bundle. Without `--student` the bottleneck is
    freshly initialized (for plumbing and figures); pass a trained student's state dict."""
    from shared.errors import SplitEdgeError
    from split_models.export import export_bundle
    from split_models.split import SplitConfig, build_student
    from split_models.teachers import build_teacher, teacher_spec

    try:
        torch.manual_seed(parsed.seed)
        teachers = {}
        for item in parsed.teacher:
            task_part, _, rest = item.rpartition("=")
            name, _, weights = rest.partition("@")
            task = task_part or teacher_spec(name).task
            teachers[task] = (name, build_teacher(name, weights or None))
        config = SplitConfig(
            latent_channels=parsed.latent_channels,
            widths=tuple(float(w) for w in parsed.widths.split(",")),
            encoder_stride=parsed.encoder_stride,
            inner_channels=parsed.inner_channels,
        )
        student = build_student(teachers, config)
        if parsed.student:
            saved = torch.load(parsed.student, map_location="cpu", weights_only=True)
            student.load_state_dict(saved)
        out = export_bundle(
            student, teachers, parsed.out, name=parsed.name, version=parsed.version,
            prefilter_threshold=parsed.prefilter_threshold,
        )
    except SplitEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _dataset(parsed: argparse.Namespace) -> int:
    from rich.progress import Progress, TaskID

    from split_models.data.synthetic import SceneConfig, generate_split, generate_video

    if parsed.what == "video":
        print(generate_video(parsed.out, parsed.seed, parsed.frames, objects=parsed.objects))
        return 0
    scene = SceneConfig(height=parsed.height, width=parsed.width, styles=parsed.styles)
    if parsed.extra_backgrounds:
        from device_client.scenes import styles

        scene = dataclasses.replace(scene, families=styles.with_backgrounds(
            scene.drawn_families(), parsed.extra_backgrounds))
    counts = {split: count for split in ("train", "val", "test")
              if (count := getattr(parsed, split))}
    with Progress() as progress:
        for split, count in counts.items():
            task = progress.add_task(f"shapes {split}", total=count)
            def advance(n: int, task: TaskID = task) -> None:
                progress.advance(task, n)

            generate_split(parsed.out, split, count, parsed.seed, scene, advance,
                           parsed.workers)
    for split in counts:
        print(parsed.out / f"{split}.json")
    return 0


def _train(parsed: argparse.Namespace) -> int:
    from split_models.training.config import as_dict, load_experiment

    experiment = load_experiment(parsed.config, parsed.set)
    out = Path(experiment.out)
    if parsed.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(as_dict(experiment), indent=1))
    torch.set_num_threads(experiment.threads)
    started = time.perf_counter()
    if experiment.kind == "teacher":
        from split_models.training.teacher import train_teacher

        result = train_teacher(experiment, out)
        timings = {"teacher": result.wall_s}
    else:
        from split_models.training.student import train_student

        timings = train_student(experiment, out)
    timings["total"] = time.perf_counter() - started
    _append_timings(out / "timings.json", timings)
    print(json.dumps({"out": str(out), "wall_s": timings}, indent=1))
    return 0


def _append_timings(path: Path, timings: dict[str, float]) -> None:
    """Wall seconds per stage, summed over the processes that ran it (resumed runs add up)."""
    known: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
    for key, value in timings.items():
        known[key] = round(known.get(key, 0.0) + value, 1)
    path.write_text(json.dumps(known, indent=1))
