"""The step loop every trainer shares: deterministic batches, learning-rate schedule, checkpoints
that resume the same run, and a progress bar with the losses and an ETA.

A run is `steps` optimizer steps. Batch `step` is drawn from a permutation seeded by
(seed, epoch) and augmentations from a generator seeded by (seed, step), so a run stopped at any
checkpoint and resumed computes exactly the steps it would have computed.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from split_models.training.config import Optim

StepFn = Callable[[int, float], Mapping[str, float]]  # (step, lr) -> losses


@dataclass
class RunResult:
    steps: int
    wall_s: float  # this process's time on the run (a resumed run counts only its own part)
    history: list[dict[str, float]] = field(default_factory=list)

    def mean(self, key: str, last: int = 10) -> float:
        values = [h[key] for h in self.history[-last:] if key in h]
        return sum(values) / max(1, len(values))


def batch_indices(count: int, batch_size: int, seed: int, step: int) -> list[int]:
    per_epoch = max(1, count // batch_size)
    epoch, offset = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(count, generator=generator)
    return order[offset * batch_size : (offset + 1) * batch_size].tolist()


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 7_919 + step + 1)


def lr_at(optim: Optim, step: int) -> float:
    """Linear warm-up, then cosine to 1 % of the peak."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    span = max(1, optim.steps - optim.warmup_steps)
    progress = (step - optim.warmup_steps) / span
    return optim.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(
    optim: Optim, parameters: list[nn.Parameter] | list[dict[str, Any]]
) -> torch.optim.Optimizer:
    if optim.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=optim.lr, momentum=0.9,
                               weight_decay=optim.weight_decay)
    return torch.optim.Adam(parameters, lr=optim.lr, weight_decay=optim.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def run_steps(
    name: str,
    optim: Optim,
    step_fn: StepFn,
    checkpoint: Path,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    console: Console | None = None,
) -> RunResult:
    """Run `optim.steps` steps of `step_fn`, resuming from `checkpoint` when it exists."""
    start_step, history = 0, []
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        for key, module in modules.items():
            module.load_state_dict(saved["modules"][key])
        for key, optimizer in optimizers.items():
            optimizer.load_state_dict(saved["optimizers"][key])
        start_step, history = int(saved["step"]), list(saved["history"])
        if "rng" in saved:  # detectors sample proposals, the prior adds noise
            torch.set_rng_state(saved["rng"])
    console = console or Console(file=sys.stderr)
    started = time.perf_counter()
    if start_step >= optim.steps:
        return RunResult(optim.steps, 0.0, history)

    def save(step: int) -> None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {
            "step": step, "history": history, "rng": torch.get_rng_state(),
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        }
        temporary = checkpoint.with_suffix(".tmp")
        torch.save(state, temporary)
        temporary.replace(checkpoint)  # a crash mid-write leaves the previous checkpoint whole

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[losses]}"), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(name, total=optim.steps, completed=start_step, losses="")
        for step in range(start_step, optim.steps):
            losses = {k: float(v) for k, v in step_fn(step, lr_at(optim, step)).items()}
            if not all(math.isfinite(v) for v in losses.values()):
                raise FloatingPointError(f"{name}: step {step} gave non-finite losses {losses}")
            history.append({"step": float(step), **losses})
            shown = " ".join(f"{k}={v:.4g}" for k, v in losses.items())
            progress.update(task, advance=1, losses=shown)
            done = step + 1
            if done % optim.log_every == 0 and not console.is_terminal:
                elapsed = time.perf_counter() - started
                eta = elapsed / (done - start_step) * (optim.steps - done)
                console.print(f"{name} {done}/{optim.steps} {shown} eta {eta:.0f}s")
            if done % optim.checkpoint_every == 0 or done == optim.steps:
                save(done)
    return RunResult(optim.steps, time.perf_counter() - started, history)
