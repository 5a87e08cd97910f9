"""A tiny shapes dataset (96x128 frames) and a tiny detection teacher, once per session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import split_models.training.loop as loop  # noqa: E402
from split_models.data.synthetic import SceneConfig, generate_dataset  # noqa: E402
from split_models.training.config import Experiment, build  # noqa: E402
from split_models.training.teacher import train_teacher  # noqa: E402

SCENE = SceneConfig(height=96, width=128, min_object=16, max_object=44, empty_share=0.25)


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_dataset(root, seed=3, counts={"train": 8, "val": 6}, config=SCENE)
    return root


def experiment(raw: dict[str, Any]) -> Experiment:
    return build(Experiment, {"threads": 1, **raw}, "test")  # type: ignore[no-any-return]


def optim(steps: int, batch_size: int = 4, **extra: Any) -> dict[str, Any]:
    return {"steps": steps, "batch_size": batch_size, "checkpoint_every": 2, "log_every": 100,
            **extra}


@pytest.fixture(scope="session")
def det_teacher(shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A detector trained a few steps: enough for the students' plumbing, not for accuracy."""
    out = tmp_path_factory.mktemp("teacher-det")
    torch.set_num_threads(1)
    train_teacher(experiment({
        "kind": "teacher", "out": str(out), "data": {"train": str(shapes / "train.json")},
        "teacher": {"teacher": {"name": "tiny_fasterrcnn", "min_size": 96, "max_size": 128},
                    "optim": optim(2, optimizer="sgd", lr=0.01)},
    }), out)
    return out / "teacher.pt"


@contextmanager
def stopped_at(monkeypatch: pytest.MonkeyPatch, step: int) -> Iterator[None]:
    """A training run inside stops at `step` as a crash would (KeyboardInterrupt, which the
    block expects), leaving its last checkpoint behind; steps run normally again after it."""
    real_lr_at = loop.lr_at

    def crash(config: Any, index: int) -> float:
        if index == step:
            raise KeyboardInterrupt
        return real_lr_at(config, index)

    monkeypatch.setattr(loop, "lr_at", crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(loop, "lr_at", real_lr_at)
