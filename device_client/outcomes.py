"""What happened to a frame: exactly one `Outcome` per frame id, and the book that enforces it.

Kinds: `edge` (the edge's result), `local` (local.onnx on the device, with the reason it ran),
`tracked` (the scheduler detects every k-th frame; this one's boxes were carried over from the
last detection by optical flow), `prefiltered` (the prefilter said nothing is there; nothing
was sent), `dropped` (with a reason: `behind`, `edge_unavailable`, `deadline_missed`,
`edge_error:<code>`, `policy_skip`, `no_local_model`, `shutdown`, `failed`).

Several threads may race to finish an in-flight frame (the reply, the deadline watcher, a lost
stream); `InFlightBook.claim` lets exactly one of them own it. Never imports torch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from device_client.sources import Frame
from shared.bundle import Branch

OutcomeKind = Literal["edge", "local", "tracked", "prefiltered", "dropped"]


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels
    score: float
    label_id: int
    label: str


@dataclass(frozen=True)
class Classification:
    label_id: int
    label: str
    score: float


@dataclass(frozen=True)
class ServerTimings:
    """The edge's own stage timings from a reply: the scheduler tells link from load with them."""

    queue_wait_ms: float
    decode_ms: float
    tail_ms: float
    total_ms: float
    batch_size: int


@dataclass(frozen=True)
class Outcome:
    frame_id: int
    kind: OutcomeKind
    capture_time_ns: int
    reason: str | None = None
    branch: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    bytes_sent: int = 0
    prefilter_score: float | None = None
    detections: tuple[Detection, ...] = ()
    classifications: tuple[Classification, ...] = ()
    server: ServerTimings | None = None
    decision: dict[str, Any] | None = None  # the adaptive scheduler's choice and predictions

    def to_json(self, stream_id: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "stream_id": stream_id,
            "frame_id": self.frame_id,
            "kind": self.kind,
            "reason": self.reason,
            "branch": self.branch,
            "capture_time_unix_ns": self.capture_time_ns,
            "bytes_sent": self.bytes_sent,
            "prefilter_score": self.prefilter_score,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "detections": [
                {"box": list(d.box), "score": d.score, "label_id": d.label_id, "label": d.label}
                for d in self.detections
            ],
            "classifications": [
                {"label_id": c.label_id, "label": c.label, "score": c.score}
                for c in self.classifications
            ],
        }
        if self.decision is not None:
            record["decision"] = self.decision
        if self.server is not None:
            record["server_ms"] = {
                "queue_wait": round(self.server.queue_wait_ms, 3),
                "decode": round(self.server.decode_ms, 3),
                "tail": round(self.server.tail_ms, 3),
                "total": round(self.server.total_ms, 3),
                "batch_size": self.server.batch_size,
            }
        return record


@dataclass
class FrameJob:
    """A frame on its way through the pipeline: what is known so far about it."""

    frame: Frame
    timings_ms: dict[str, float] = field(default_factory=dict)
    branch: Branch | None = None
    prefilter_score: float | None = None
    bytes_sent: int = 0
    deadline: float = float("inf")  # monotonic seconds, once sent
    sent: float = 0.0  # monotonic seconds, once sent
    decision: dict[str, Any] | None = None  # the adaptive policy's choice, for the outcome line


class InFlightBook:
    """Frames awaiting the edge, by id. `claim` pops one for exactly one caller."""

    def __init__(self) -> None:
        self._frames: dict[int, FrameJob] = {}
        self._changed = threading.Condition()

    def add(self, item: FrameJob) -> None:
        with self._changed:
            self._frames[item.frame.frame_id] = item
            self._changed.notify_all()

    def claim(self, frame_id: int) -> FrameJob | None:
        """The frame if still in flight (the caller now owns its outcome), else None."""
        with self._changed:
            item = self._frames.pop(frame_id, None)
            self._changed.notify_all()
            return item

    def claim_expired(self, now: float) -> list[FrameJob]:
        with self._changed:
            expired = [f for f in self._frames.values() if f.deadline <= now]
            for item in expired:
                del self._frames[item.frame.frame_id]
            if expired:
                self._changed.notify_all()
            return expired

    def next_deadline(self) -> float | None:
        with self._changed:
            return min((f.deadline for f in self._frames.values()), default=None)

    def wait_below(self, limit: int, timeout: float | None = None) -> bool:
        """Block until fewer than `limit` frames are in flight; False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while len(self._frames) >= limit:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def wait_change(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    def __len__(self) -> int:
        with self._changed:
            return len(self._frames)

    def __iter__(self) -> Iterator[FrameJob]:
        with self._changed:
            return iter(list(self._frames.values()))
