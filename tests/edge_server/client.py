"""What a device sends: frames through the bundle's ONNX head and codec (the real device path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device_client.head import HeadRunner
from shared.bundle import split_branch_id
from shared.messages import FrameRequest, infer_request
from shared.wire import pb

MODEL = "demo-shapes"


class FrameEncoder:
    def __init__(self, bundle_dir: Path) -> None:
        self.runner = HeadRunner.load(bundle_dir)

    def request(
        self,
        frame: np.ndarray,
        frame_id: int = 0,
        width: float = 1.0,
        stream_id: str = "test",
        deadline_unix_ns: int = 0,
    ) -> pb.InferRequest:
        self.runner.set_width(width)
        out = self.runner.run(frame)
        assert out.payload is not None
        geometry = out.head_input.geometry
        about = FrameRequest(
            MODEL,
            branch_id=split_branch_id(width),
            stream_id=stream_id,
            frame_id=frame_id,
            deadline_ns=deadline_unix_ns,
            original_size=geometry.original,
        )
        return infer_request(about, latent=out.payload, input_size=geometry.input_size)


def detections(response: pb.InferResponse) -> list[tuple[float, ...]]:
    return [
        (d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max, d.score, d.label_id)
        for d in response.detections
    ]


def assert_same_detections(ours: list[tuple[float, ...]], theirs: list[tuple[float, ...]]) -> None:
    """Same boxes one-to-one (IoU ≥ 0.99, same label, score within 1e-3), in any order: near-tied
    scores of an untrained detector may swap places between a batched and an unbatched run."""
    assert len(ours) == len(theirs)
    if not ours:
        return
    a, b = np.array(ours), np.array(theirs)
    iou = _iou(a[:, :4], b[:, :4])
    iou[a[:, 5][:, None] != b[:, 5][None, :]] = 0
    iou[np.abs(a[:, 4][:, None] - b[:, 4][None, :]) > 1e-3] = 0
    used: set[int] = set()
    for i in np.argsort(-iou.max(axis=1)):
        candidates = [j for j in np.argsort(-iou[i]) if j not in used and iou[i, j] >= 0.99]
        assert candidates, f"detection {a[i]} has no counterpart"
        used.add(int(candidates[0]))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
