"""The small real bundles the tests run on, each built at most once per session by the one
`bundles` fixture (tests/conftest.py):

    bundles.demo   tiny Faster R-CNN (head + detection tail) and a tiny ResNet classification tail
                   on one latent, random init, exported for real ("demo-shapes"): the edge's and
                   the model code's tests
    bundles.tiny   the tiny Faster R-CNN split at two widths, with a prefilter trained to tell the
                   generated stream's empty frames from the rest ("tiny"): the device's tests

Torch is imported only when a bundle is built, in the test process: the daemons under test
never see it, and the torch-free tests never build one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@dataclass
class Demo:
    root: Path
    student: Any  # split_models.split.SplitModel
    teachers: dict[str, Any]  # task -> torch.nn.Module


def frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A frame with some structure (gradients + blocks), so features are not flat."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1),
                      (x + y) % 256], axis=-1).astype(np.uint8)
    for _ in range(4):
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        image[top : top + height // 4, left : left + width // 4] = rng.integers(0, 255, 3)
    # Noise: flat regions make identical boxes with identical scores (ties decide nothing).
    return (image // 2 + rng.integers(0, 128, image.shape)).astype(np.uint8)


def spread_scores(detector: Any) -> Any:
    """Random init gives every box the same score (~1/classes), so which boxes make the top-k is a
    coin toss between any two runs. Larger predictor weights spread the scores as training would;
    a parity test then compares real decisions, not ties."""
    import torch

    with torch.no_grad():
        for layer in (detector.roi_heads.box_predictor.cls_score, detector.rpn.head.cls_logits):
            layer.weight.normal_(0.0, 0.5)
    return detector


class Bundles:
    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self._factory = factory

    @cached_property
    def demo(self) -> Demo:
        torch = pytest.importorskip("torch")
        from split_models.export import export_bundle
        from split_models.split import SplitConfig, build_student
        from split_models.teachers import build_teacher

        torch.manual_seed(0)
        teachers = {
            "detection": ("tiny_fasterrcnn", spread_scores(build_teacher("tiny_fasterrcnn"))),
            "classification": ("tiny_resnet", build_teacher("tiny_resnet")),
        }
        student = build_student(teachers, SplitConfig(inner_channels=32))
        root = export_bundle(
            student, teachers, self._factory.mktemp("bundle") / "demo-shapes",
            name="demo-shapes", version="1", prefilter_threshold=0.5, sample=frame(360, 480),
            repeats=1,
        )  # fmt: skip
        return Demo(root, student, {task: model for task, (_, model) in teachers.items()})

    @cached_property
    def tiny(self) -> Path:
        pytest.importorskip("torch")
        from tests.device_client.bundle_factory import make_tiny_bundle

        return make_tiny_bundle(self._factory.mktemp("bundle") / "tiny")
