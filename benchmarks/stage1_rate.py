"""The rate a student's stage 1 reached, per width: bytes per frame as the device's coder would
send them (the prior's density on the rounded latent, `LatentPrior.coded_bits`) on the same
training batches for every checkpoint, with the λs it ended at.

    python -m benchmarks.stage1_rate --checkpoint out/runs/demo-shapes/student/stage1.ckpt \
        [--config configs/demo-shapes/student.yaml] [--set KEY=VALUE ...] [--batches 10]

Why it exists: a fixed rate weight buys whatever rate the teacher it distils makes optimal (a
fresh run of the demo recipe: 950 B at width 1.0 here, where v9's rate prices at ~795), and
`student.rate_target` steers stage 1 to a rate; this prices what a run reached, the same way
for any run, before the hour of stages after it. `--set` takes the run's overrides (the teacher
it distilled, if not the config's). Prints one line per width; `--json` writes them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from split_models.training.config import load_experiment
from split_models.training.student import StudentTrainer, _train_modes


def measure(config: Path, checkpoint: Path, overrides: list[str], batches: int,
            batch_size: int = 8) -> list[dict[str, Any]]:
    trainer = StudentTrainer(load_experiment(config, overrides), checkpoint.parent)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    trainer.student.load_state_dict(saved["modules"]["student"])
    last = saved["history"][-1] if saved["history"] else {}
    student = trainer.student
    rows = []
    with torch.no_grad():
        # stage 1's own batches and modes (batch statistics, the training augmentation)
        chosen = [trainer.train_batch(step * 80, batch_size) for step in range(batches)]
        for width in trainer.widths:
            student.set_width(width)
            _train_modes(student, [student.head.stem, student.head.encoder, student.prior])
            coded = [float(student.prior.coded_bits(student.head(b.images)[0]).mean()) / 8
                     for b in chosen]
            rows.append({"width": width, "bytes_per_frame": sum(coded) / len(coded),
                         "lambda": last.get(f"lambda@{width:g}",
                                            trainer.config.lambda_at(width)),
                         "step": saved["step"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a stage1.ckpt")
    parser.add_argument("--config", type=Path,
                        default=Path("configs/demo-shapes/student.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = measure(args.config, args.checkpoint, args.overrides, args.batches)
    for row in rows:
        print(f"w={row['width']:g}: {row['bytes_per_frame']:.1f} B per frame coded, "
              f"λ {row['lambda']:.3g} (step {row['step']})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
