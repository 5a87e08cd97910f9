"""The frame label read off the detection tail (`largest_object`): the rule itself, a student
that shares one detection tail between both tasks, and a bundle whose edge answers both tasks
from one latent — and from one run of the detection tail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from device_client.local import LocalRunner  # noqa: E402
from shared.bundle import load_bundle  # noqa: E402
from shared.errors import TeacherError  # noqa: E402
from shared.results import Results, largest_object_label  # noqa: E402
from split_models.export import export_bundle  # noqa: E402
from split_models.runtime import TailRuntime  # noqa: E402
from split_models.split import SplitConfig, build_student  # noqa: E402
from split_models.tails import LargestObject, LargestObjectTail, run_tails  # noqa: E402
from split_models.teachers import build_teacher  # noqa: E402
from tests.bundles import frame, spread_scores  # noqa: E402


def _found(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, object]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores), "labels": torch.tensor(labels, dtype=torch.int64)}


def test_the_largest_confident_detection_names_the_frame() -> None:
    rule = LargestObject(num_classes=6)
    logits = rule([
        # a small sure square (2) and a large likely star (4): the largest one counts
        _found([[0, 0, 10, 10], [20, 20, 80, 90]], [0.95, 0.7], [2, 4]),
        # the largest box is below the score: the confident small one counts
        _found([[0, 0, 10, 10], [0, 0, 200, 200]], [0.8, 0.3], [1, 5]),
        # nothing confident: "none", the best guess second
        _found([[0, 0, 50, 50]], [0.4], [3]),
        _found([], [], []),
        # a label the classifier does not have is ignored
        _found([[0, 0, 90, 90], [0, 0, 20, 20]], [0.9, 0.6], [9, 1]),
    ])
    assert logits.shape == (5, 6)
    probabilities = logits.softmax(-1)
    assert probabilities.argmax(-1).tolist() == [4, 1, 0, 0, 1]
    assert probabilities[0, 4] == pytest.approx(0.7, abs=0.01)
    assert probabilities[2].topk(2).indices.tolist() == [0, 3]
    assert torch.allclose(probabilities.sum(-1), torch.ones(5))


def _teachers(classification: str = "largest_object") -> dict[str, tuple[str, object]]:
    torch.manual_seed(0)
    return {"detection": ("tiny_fasterrcnn", spread_scores(build_teacher("tiny_fasterrcnn"))),
            "classification": (classification, build_teacher(classification, None, 6))}


def test_the_student_shares_one_detection_tail_between_both_tasks() -> None:
    student = build_student(_teachers(), SplitConfig(inner_channels=16))
    tail = student.tails["classification"]
    assert isinstance(tail, LargestObjectTail) and tail.detection is student.tails["detection"]
    # saved once, under the detection task; the rule has no weights
    assert not [k for k in student.state_dict() if k.startswith("tails.classification.")]
    with pytest.raises(TeacherError, match="must be a network"):
        build_student({"classification": ("largest_object", build_teacher("largest_object"))},
                      SplitConfig(inner_channels=16))
    with pytest.raises(TeacherError, match="no detection teacher"):
        build_student({"classification": ("tiny_resnet", build_teacher("tiny_resnet")),
                       "other": ("largest_object", build_teacher("largest_object"))},
                      SplitConfig(inner_channels=16))


def test_both_tasks_run_the_detection_tail_once() -> None:
    student = build_student(_teachers(), SplitConfig(inner_channels=16)).eval()
    image = torch.from_numpy(frame(96, 128))[None]
    latent = student.prior.quantize(student.head(image)[0])
    calls = []
    student.tails["detection"].register_forward_hook(lambda *_: calls.append(1))
    sizes, originals = [(96, 128)], [(96, 128)]
    with torch.no_grad():
        both = run_tails(student.tails, latent, sizes, originals,
                         ("classification", "detection"))
        assert len(calls) == 1
        alone = run_tails(student.tails, latent, sizes, originals, ("classification",))
        assert len(calls) == 2  # asked alone, it runs the detection tail itself
    assert torch.equal(both["classification"], alone["classification"])
    assert torch.equal(both["classification"],
                       student.tails["classification"].rule(both["detection"]))


def test_a_bundle_answers_the_frame_label_from_its_detections(tmp_path: Path) -> None:
    teachers = _teachers()
    student = build_student(teachers, SplitConfig(inner_channels=16))
    root = export_bundle(student, teachers, tmp_path / "bundle", name="lo", version="1",
                         sample=frame(120, 160), repeats=1)
    runtime = TailRuntime.load(root)
    assert runtime.bundle.manifest.tasks == ("detection", "classification")
    image = frame(120, 160, seed=3)
    head = student.eval().head
    with torch.no_grad():
        latent = student.prior.quantize(head(torch.from_numpy(image)[None])[0])[0].numpy()
    (result,) = runtime.run_latents([latent], [(120, 160)], [(120, 160)])
    confident = [d for d in result.detections if d.score >= 0.5]
    areas = [(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) for d in confident]
    expected = confident[int(np.argmax(areas))].label_id if confident else 0
    assert result.classifications[0].label_id == expected
    # the full-frame path reads the edge teacher's detections the same way
    (whole,) = runtime.run_images([image], ("classification",))
    assert not whole.detections and whole.classifications
    (both,) = runtime.run_images([image])
    sure = [d for d in both.detections if d.score >= 0.5]
    sizes = [(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) for d in sure]
    assert both.classifications[0].label_id == (
        sure[int(np.argmax(sizes))].label_id if sure else 0)


def test_the_device_reads_the_label_as_the_edge_does() -> None:
    """The device's fallback (shared.results, no torch) answers what the edge's tail answers."""
    rule = LargestObject(num_classes=6)
    generator = np.random.default_rng(4)
    for _ in range(200):
        count = int(generator.integers(0, 6))
        corners = generator.uniform(0, 200, (count, 2))
        boxes = np.concatenate([corners, corners + generator.uniform(1, 90, (count, 2))], 1)
        scores = generator.uniform(0, 1, count).astype(np.float32)
        labels = generator.integers(1, 8, count)  # 6 and 7: labels the classifier lacks
        (edge,) = rule([_found(boxes.tolist(), scores.tolist(), labels.tolist())]).softmax(-1)
        device = largest_object_label(boxes, scores, labels, 6, rule.min_score)
        top = edge.topk(len(device))
        assert [c.label_id for c in device][:1] == top.indices.tolist()[:1]
        assert [c.score for c in device] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_the_fallback_labels_a_frame_from_local_detections(tmp_path: Path) -> None:
    teachers = _teachers()
    student = build_student(teachers, SplitConfig(inner_channels=16))
    root = export_bundle(student, teachers, tmp_path / "bundle", name="lo", version="1",
                         sample=frame(120, 160), repeats=1)
    manifest = load_bundle(root).manifest
    assert manifest.derived["classification"].rule == "largest_object"
    assert "classification" not in manifest.local_files
    local = LocalRunner.load(root, threads=1)
    image = frame(120, 160, seed=3)
    both = local.run(image, ("detection", "classification"))
    found = local.detect(image)
    expected = largest_object_label(found.boxes, found.scores, found.labels, 6, 0.5)
    assert both.classifications == Results((), expected).labelled(manifest.classes).classifications
    assert both.classifications[0].label in manifest.classes["classification"]
    # asked for the label alone, the detector still runs, and only the label comes back
    alone = local.run(image, ("classification",))
    assert not alone.detections and alone.classifications == both.classifications
    assert not local.run(image, ("detection",)).classifications
