"""benchmarks.repeated_detections: the after-the-fact rule suppresses only a class repeated past
the limit in one frame, and the training bound is the largest count of one class in a frame."""

from __future__ import annotations

from typing import Any

from benchmarks.repeated_detections import false_per_empty, most_of_one_class, suppress_repeats


def det(image: int, cls: int, score: float) -> dict[str, Any]:
    return {"image_id": image, "category_id": cls, "score": score, "bbox": [0, 0, 10, 10]}


def test_only_a_class_repeated_past_the_limit_in_one_frame_is_scaled_down() -> None:
    tiles = [det(1, 2, 0.9) for _ in range(5)]  # five squares in frame 1: a checkerboard
    lone = [det(1, 1, 0.8), det(2, 2, 0.9)]  # a circle beside them; one square elsewhere
    faint = [det(3, 2, 0.1) for _ in range(9)]  # many, but under the counted score
    out = suppress_repeats(tiles + lone + faint, limit=4, counted=0.3, factor=0.5)
    scores = {(d["image_id"], d["category_id"]): [] for d in out}
    for d in out:
        scores[(d["image_id"], d["category_id"])].append(d["score"])
    assert scores[(1, 2)] == [0.45] * 5
    assert scores[(1, 1)] == [0.8] and scores[(2, 2)] == [0.9]
    assert scores[(3, 2)] == [0.1] * 9
    assert len(out) == len(tiles + lone + faint)
    assert suppress_repeats(tiles, limit=5) == tiles  # at the limit: kept as answered


def test_the_training_bound_and_false_detections_per_empty_frame() -> None:
    annotations = [{"image_id": 1, "category_id": 2}] * 3 + [{"image_id": 1, "category_id": 1},
                                                             {"image_id": 2, "category_id": 2}]
    assert most_of_one_class(annotations) == 3
    assert most_of_one_class([]) == 0
    found = [det(7, 2, 0.6), det(7, 2, 0.4), det(8, 1, 0.9), det(1, 2, 0.9)]
    assert false_per_empty(found, empty={7, 8}) == 1.0  # two of ≥ 0.5 over two empty frames
