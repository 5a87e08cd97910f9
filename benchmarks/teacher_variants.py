"""Teacher recipes side by side: the demo teacher's training with style-randomization variants,
trained in parallel processes (one GPU, or the CPU), each scored on the same frames.

    python -m benchmarks.teacher_variants --out out/teacher_variants --budget 360 \
        [--variants base rc50 rc80 am50 rc50am50] [--train 8000] [--steps 5000]
    python -m benchmarks.teacher_variants --out out/tv \
        --check out/runs/demo-shapes/teacher-det/teacher.pt [--teacher tiny_fasterrcnn_ibn]

Frames are rendered in memory (a process pool) with the benchmark's own seeds: the training
split, the in-distribution and shifted test splits (the same frames as `out/data/.../test.json`),
and `benchmarks.style_shift`'s "shifted backgrounds" / "shifted fills" probes. Each variant is
the teacher recipe (`configs/demo-shapes/teacher-det.yaml`: tiny Faster R-CNN, SGD, batch 4,
flips, photometric jitter, two RandAugment colour ops) plus the named style randomization
(`split_models/training/style_randomization.py`). `--budget` seconds of training fit each
variant's cosine schedule (the step count is set after `--probe-steps` steps, so every variant
finishes its schedule); `--check` only scores a trained `teacher.pt` (it reproduces `splitedge
eval`'s teacher mAPs). Prints one line per variant; writes `<variant>.json`.

Built to explore on a lent GPU (where compressai has no wheel: only the student's bottleneck
imports it, so a stand-in is installed when it is missing); the shipped recipe runs on the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import multiprocessing as mp
import os
import pickle
import sys
import time
import types
from pathlib import Path
from typing import Any

if importlib.util.find_spec("compressai") is None:
    # only the student's bottleneck imports it; teachers never touch it
    _stub = types.ModuleType("compressai.entropy_models")
    _stub.EntropyBottleneck = object  # type: ignore[attr-defined]
    sys.modules["compressai"] = types.ModuleType("compressai")
    sys.modules["compressai.entropy_models"] = _stub

import numpy as np

SHM = Path(os.environ.get("TEACHER_VARIANTS_TMP", "/dev/shm/teacher_variants"))

VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "rc50": {"random_convolution": 0.5},
    "rc80": {"random_convolution": 0.8},
    "am50": {"amplitude_mix": 0.5},
    "rc50am50": {"random_convolution": 0.5, "amplitude_mix": 0.5},
    # the same detector at 1.5x the channels (backbone, FPN, box head): capacity, not data
    "wide": {"model": {"widths": (24, 48, 96, 192), "fpn_channels": 48, "representation": 192}},
    # the recipe on the first N distinct training frames (render at least N with --train): does
    # seeing more draws of the training styles, at the same steps, move the shifted ÷ in-dist?
    "f4k": {"frames": 4000},
    "f8k": {"frames": 8000},
    "f24k": {"frames": 24000},
    # IBN-a (instance + batch norm) in the first 2 / 3 stages: appearance normalized per frame
    "ibn2": {"model": {"ibn": 2}},
    "ibn3": {"model": {"ibn": 3}},
    # the box head also sees each box's surround, 2x / 3x its size (tiny.ContextRoIPool): can
    # it learn from the training tilings that a shape repeated around a box is background?
    "ctx2": {"model": {"context": 2.0}},
    "ctx3": {"model": {"context": 3.0}},
    # training frames that also draw these opt-in background families (styles.EXTRA_BACKGROUNDS)
    "motifs": {"backgrounds": ("motifs",)},
    "ctx2motifs": {"model": {"context": 2.0}, "backgrounds": ("motifs",)},
}
NOT_DATA = ("model", "frames", "backgrounds")  # variant keys that are not `Data` options


def train_set(variant: str) -> str:
    """The rendered set a variant trains on: `train`, or one drawing its extra backgrounds."""
    extra = VARIANTS[variant].get("backgrounds", ())
    return "_".join(("train", *extra))


def _render(job: tuple[int, int, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame `index` of a set drawn with seeds (0, salt, index) and a SceneConfig."""
    from device_client.scenes import render_scene

    salt, index, config = job
    scene = render_scene(np.random.default_rng([0, salt, index]), config)
    boxes, labels = [], []
    for placed in scene.objects:
        x, y, w, h = placed.box
        if w < 1 or h < 1:
            continue
        boxes.append([x, y, x + w, y + h])
        labels.append(placed.label + 1)
    return (scene.image, np.array(boxes, np.float32).reshape(-1, 4),
            np.array(labels, np.int64))


def generate(name: str, salt: int, count: int, config: Any, pool: mp.pool.Pool) -> None:
    started = time.time()
    rows = pool.map(_render, [(salt, i, config) for i in range(count)], chunksize=16)
    np.save(SHM / f"{name}_images.npy", np.stack([r[0] for r in rows]))
    save_targets(name, [(r[1], r[2]) for r in rows])
    print(f"data {name}: {count} frames in {time.time() - started:.0f} s", flush=True)


def save_targets(name: str, targets: list[tuple[np.ndarray, np.ndarray]]) -> None:
    with open(SHM / f"{name}_targets.pkl", "wb") as f:
        pickle.dump(targets, f)


def load(name: str) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    with open(SHM / f"{name}_targets.pkl", "rb") as f:
        targets = pickle.load(f)
    return np.load(SHM / f"{name}_images.npy", mmap_mode="r"), targets


class Steps:
    """Map-style: item `step` is that step's augmented batch, as train_teacher draws it."""

    def __init__(self, data: object, batch_size: int, frames: int | None = None,
                 source: str = "train") -> None:
        self.data, self.batch_size, self.frames, self.source = data, batch_size, frames, source
        self.images: np.ndarray | None = None

    def __len__(self) -> int:
        return 10**7

    def __getitem__(self, step: int) -> tuple[object, list[object], list[object]]:
        import torch

        from split_models.data.coco import Frame
        from split_models.training.loop import batch_indices, step_generator
        from split_models.training.teacher import augment_batch

        if self.images is None:
            torch.set_num_threads(1)
            self.images, self.targets = load(self.source)
            if self.frames is not None and self.frames > len(self.images):
                raise ValueError(f"{self.frames} frames asked, {len(self.images)} rendered: "
                                 "raise --train")
            self.count = self.frames or len(self.images)
        generator = step_generator(0, step)
        frames = [Frame(np.array(self.images[i]), *self.targets[i], image_id=i + 1)
                  for i in batch_indices(self.count, self.batch_size, 0, step)]
        frames = augment_batch(frames, generator, self.data)  # type: ignore[arg-type]
        images = torch.from_numpy(np.stack([f.image for f in frames]))
        return (images, [torch.from_numpy(f.boxes) for f in frames],
                [torch.from_numpy(f.labels) for f in frames])


def evaluate(model: object, name: str, device: str, frames: int) -> dict[str, object]:
    import torch

    from benchmarks.style_shift import SCORE, coco_scores, detections_as_coco

    images, targets = load(name)
    truth: list[dict[str, Any]] = []
    found: list[dict[str, Any]] = []
    info = []
    empty = false_on_empty = 0
    with torch.inference_mode():
        for start in range(0, min(frames, len(images)), 25):
            chunk = range(start, min(start + 25, frames, len(images)))
            x = [torch.from_numpy(np.array(images[i])).permute(2, 0, 1).float().div(255)
                 .to(device) for i in chunk]
            outs = model(x)  # type: ignore[operator]
            for i, out in zip(chunk, outs, strict=True):
                boxes, labels = targets[i]
                info.append({"id": i, "height": 240, "width": 320})
                for box, label in zip(boxes.tolist(), labels.tolist(), strict=True):
                    w, h = box[2] - box[0], box[3] - box[1]
                    truth.append({"id": len(truth) + 1, "image_id": i, "category_id": label,
                                  "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
                if len(labels) == 0:
                    empty += 1
                    false_on_empty += int((out["scores"] >= SCORE).sum())
                found += detections_as_coco(i, {k: v.cpu() for k, v in out.items()})
    map_, map50, per_class = coco_scores(info, truth, found)
    return {"fd_per_empty": round(false_on_empty / max(empty, 1), 2), "map": round(map_, 4),
            "map50": round(map50, 4), "per_class": per_class}


def adapt_batch_norm(model: Any, name: str, frames: int) -> None:
    """AdaBN (Li et al., 2016): every batch norm's running statistics replaced by those of the
    backbone's features on `frames` frames of set `name`, no labels used."""
    import torch

    images, _ = load(name)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative mean over every batch
        norm.train()
    with torch.inference_mode():
        for start in range(0, min(frames, len(images)), 25):
            batch = [torch.from_numpy(np.array(images[i])).permute(2, 0, 1).float().div(255)
                     for i in range(start, min(start + 25, frames, len(images)))]
            model.backbone(model.transform(batch)[0].tensors)
    for norm in norms:
        norm.eval()


def train(variant: str, args: argparse.Namespace) -> None:
    import torch
    from torch import nn

    from split_models.teachers import build_teacher
    from split_models.tiny import tiny_fasterrcnn
    from split_models.training.config import Data, DetectorSampling, Optim
    from split_models.training.loop import lr_at, make_optimizer, set_lr
    from split_models.training.teacher import set_detector_size, set_sampling

    log = open(SHM / f"{variant}.log", "w")  # noqa: SIM115

    def say(text: str) -> None:
        print(f"[{variant}] {text}", flush=True)
        log.write(text + "\n")
        log.flush()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(2)
    torch.backends.cudnn.benchmark = True
    styles = {k: v for k, v in VARIANTS[variant].items() if k not in NOT_DATA}
    data = Data(train="-", colour_ops=2, **styles)
    optim = Optim(steps=args.steps, batch_size=4, lr=0.02, optimizer="sgd", weight_decay=1e-4,
                  warmup_steps=100)
    torch.manual_seed(0)
    shape = VARIANTS[variant].get("model")
    model = (tiny_fasterrcnn(6, 240, 320, **shape) if shape
             else build_teacher("tiny_fasterrcnn", None, 6))
    set_detector_size(model, 240, 320)
    set_sampling(model, DetectorSampling())
    model.to(device).train()
    optimizer = make_optimizer(optim, [p for p in model.parameters() if p.requires_grad])
    loader = torch.utils.data.DataLoader(
        Steps(data, optim.batch_size, VARIANTS[variant].get("frames"), train_set(variant)),
        batch_size=None,
        num_workers=args.workers, prefetch_factor=8, persistent_workers=True, sampler=range(10**7))
    started = time.time()
    total = optim.steps
    for step, (images, boxes, labels) in enumerate(loader):
        if step >= total:
            break
        if time.time() - started > args.budget + 40:
            say(f"over the time budget at step {step} of {total}")
            total = step
            break
        if step == 50:
            warm = time.time()
        if step == args.probe_steps:
            # fit the cosine schedule to the time budget: every variant finishes its schedule
            rate = (step - 50) / (time.time() - warm)
            total = min(optim.steps, int(step + rate * (args.budget - (time.time() - started))))
            optim = dataclasses.replace(optim, steps=total)
            say(f"{rate:.1f} steps/s -> {total} steps")
        set_lr(optimizer, lr_at(optim, step))
        x = [im.permute(2, 0, 1).float().div(255).to(device, non_blocking=True) for im in images]
        targets = [{"boxes": b.to(device), "labels": lb.to(device)}
                   for b, lb in zip(boxes, labels, strict=True)]
        losses = model(x, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        if step % 500 == 0:
            say(f"step {step} loss {float(loss.detach()):.3f} {time.time() - started:.0f} s")
    seconds = time.time() - started
    model.eval()
    result = {"variant": variant, "data": VARIANTS[variant], "steps": total,
              "train_s": round(seconds)}
    for name in ("test", "shifted", "shifted_bg", "shifted_fills"):
        result[name] = evaluate(model, name, device, args.eval_frames)
    say(json.dumps(result))
    (Path(args.out) / f"{variant}.json").write_text(json.dumps(result, indent=1))



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--eval-frames", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--probe-steps", type=int, default=300)
    parser.add_argument("--budget", type=float, default=400.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--skip-data", action="store_true")
    parser.add_argument("--check", help="evaluate this teacher.pt on the generated sets, then stop")
    parser.add_argument("--adapt-bn", metavar="SET",
                        help="with --check: batch-norm statistics re-estimated on SET's frames "
                             "first (AdaBN; test-time adaptation, unlabelled)")
    parser.add_argument("--teacher", default="tiny_fasterrcnn",
                        help="the registry name --check's teacher.pt was trained as")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    SHM.mkdir(parents=True, exist_ok=True)
    if not args.skip_data:
        from benchmarks.style_shift import PROBE_SALT, probes
        from device_client.scenes import SceneConfig

        found = probes()
        with mp.get_context("fork").Pool(args.pool) as pool:
            from device_client.scenes import styles

            for name in sorted({train_set(v) for v in args.variants} | {"train"}):
                extra = name.split("_")[1:]
                families = styles.with_backgrounds(styles.TRAIN, extra) if extra else None
                generate(name, 1, args.train, SceneConfig(families=families), pool)
            generate("test", 3, args.eval_frames, SceneConfig(), pool)
            generate("shifted", 1003, args.eval_frames, SceneConfig(styles="shifted"), pool)
            # the part-wise probes, on style_shift's own seeds
            generate("shifted_bg", PROBE_SALT, args.eval_frames, found["shifted backgrounds"],
                     pool)
            generate("shifted_fills", PROBE_SALT, args.eval_frames, found["shifted fills"], pool)
    if args.check:

        from split_models.teachers import build_teacher
        from split_models.training.teacher import set_detector_size

        model = build_teacher(args.teacher, args.check, 6)
        set_detector_size(model, 240, 320)
        if args.adapt_bn:
            adapt_batch_norm(model, args.adapt_bn, args.eval_frames)
        for name in ("test", "shifted", "shifted_bg", "shifted_fills"):
            print(name, evaluate(model.eval(), name, "cpu", args.eval_frames), flush=True)
        return
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=train, args=(v, args)) for v in args.variants]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    print("exit codes", [p.exitcode for p in procs], flush=True)
    for v in args.variants:
        path = Path(args.out) / f"{v}.json"
        if not path.exists():
            print(v, "no result")
            continue
        r = json.loads(path.read_text())
        print(v, r["steps"], "steps", r["train_s"], "s |", " | ".join(
            f"{k} {r[k]['map']:.3f}/{r[k]['map50']:.3f}/{r[k]['fd_per_empty']}"
            for k in ("test", "shifted", "shifted_bg", "shifted_fills")),
            f"| ratio {r['shifted']['map'] / max(r['test']['map'], 1e-9):.3f}", flush=True)


if __name__ == "__main__":
    main()
