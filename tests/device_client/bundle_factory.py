"""A small real bundle for the device tests: the tiny Faster R-CNN split at two widths, with a
prefilter trained for a few seconds to tell the generated stream's empty frames from the rest.

Torch is imported here, in the test process only: the daemon under test never sees it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from device_client.config import GeneratedSource
from device_client.head import HeadRunner
from device_client.preprocess import Preprocessor
from device_client.sources import ShapesGenerator
from shared.bundle import load_bundle, write_manifest
from split_models.export import export_bundle, preprocessing_for
from split_models.split import SplitConfig, build_student
from split_models.teachers import build_teacher

CALIBRATED_FRAMES = 60  # the prefilter tests stay within these frames of the scene
# The plumbing stream: the tiny bundle's prefilter learns to tell its empty frames apart.
SCENE = GeneratedSource(
    kind="generated", scenes="plumbing", width=320, height=240, seed=7, empty_run=4, object_run=6
)


def scene(**changes: object) -> GeneratedSource:
    """The generated stream the bundle's prefilter was trained on (other fields as given)."""
    return SCENE.model_copy(update=changes)


def make_tiny_bundle(out: Path) -> Path:
    torch.manual_seed(0)
    detector = build_teacher("tiny_fasterrcnn", None).eval()
    teachers = {"detection": ("tiny_fasterrcnn", detector)}
    student = build_student(teachers, SplitConfig(latent_channels=8, widths=(0.5, 1.0)))
    _train_prefilter(student, teachers)
    export_bundle(student, teachers, out, name="tiny", version="1", repeats=1)
    _calibrate_threshold(out)
    return out


def _frames(count: int) -> tuple[list[np.ndarray], list[bool]]:
    generator = ShapesGenerator(SCENE)
    return [generator.frame(i) for i in range(count)], [
        generator.has_objects(i) for i in range(count)
    ]


def _train_prefilter(student: torch.nn.Module, teachers: dict) -> None:
    """Labels from the generator (whether shapes were drawn); only the prefilter learns."""
    name, teacher = teachers["detection"]
    preprocess = Preprocessor(preprocessing_for(name, teacher, student))
    frames, labels = _frames(CALIBRATED_FRAMES)
    images = torch.from_numpy(np.concatenate([preprocess(f).image for f in frames]))
    targets = torch.tensor(labels, dtype=torch.float32)
    head = student.head
    with torch.no_grad():
        features = head.stem(head.normalize(images))
    prefilter = head.prefilter.train()
    optimizer = torch.optim.Adam(prefilter.parameters(), lr=0.01)
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy(prefilter(features), targets)
        loss.backward()
        optimizer.step()
    prefilter.eval()


def _calibrate_threshold(root: Path) -> None:
    """Threshold midway between the empty frames' highest score and the others' lowest."""
    runner = HeadRunner.load(root, threads=1)
    frames, labels = _frames(CALIBRATED_FRAMES)
    scores = [runner.prefilter(runner.preprocess(f).image) for f in frames]
    empty = max(s for s, has in zip(scores, labels, strict=True) if not has)
    busy = min(s for s, has in zip(scores, labels, strict=True) if has)
    assert empty < busy, f"the prefilter did not learn the scene: empty ≤ {empty}, busy ≥ {busy}"
    manifest = load_bundle(root).manifest
    prefilter = manifest.prefilter.model_copy(update={"threshold": (empty + busy) / 2})
    write_manifest(root, manifest.model_copy(update={"prefilter": prefilter}))
