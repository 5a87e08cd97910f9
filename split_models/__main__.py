"""`splitedge export ...` (also `python -m split_models export ...`): build teachers, split them,
export a bundle.

    splitedge export --teacher detection=tiny_fasterrcnn \
        --teacher classification=tiny_resnet --name demo-shapes --out bundles/demo-shapes

Without `--student` the bottleneck is freshly initialized (for plumbing and figures); pass the
state dict of a trained student to export that one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from shared.errors import SplitEdgeError
from split_models.export import export_bundle
from split_models.split import SplitConfig, build_student
from split_models.teachers import TEACHERS, build_teacher, teacher_spec


def main(argv: list[str] | None = None) -> int:
    # `splitedge` is the one command users type; this module is also reachable as
    # `python -m split_models`, which takes the same arguments.
    parser = argparse.ArgumentParser(prog="splitedge")
    commands = parser.add_subparsers(dest="command", required=True)
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
    args = parser.parse_args(argv)
    try:
        torch.manual_seed(args.seed)
        teachers = {}
        for item in args.teacher:
            task_part, _, rest = item.rpartition("=")
            name, _, weights = rest.partition("@")
            task = task_part or teacher_spec(name).task
            teachers[task] = (name, build_teacher(name, weights or None))
        config = SplitConfig(
            latent_channels=args.latent_channels,
            widths=tuple(float(w) for w in args.widths.split(",")),
            encoder_stride=args.encoder_stride,
            inner_channels=args.inner_channels,
        )
        student = build_student(teachers, config)
        if args.student:
            student.load_state_dict(torch.load(args.student, map_location="cpu", weights_only=True))
        out = export_bundle(
            student, teachers, args.out, name=args.name, version=args.version,
            prefilter_threshold=args.prefilter_threshold,
        )
    except SplitEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
