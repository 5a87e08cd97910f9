"""What happened to a frame: exactly one `Outcome` per frame id.

Kinds: `edge` (the edge's result), `local` (local.onnx on the device, with the reason it ran),
`tracked` (the scheduler detects every k-th frame; this one's boxes were carried over from the
last detection by optical flow), `prefiltered` (the prefilter said nothing is there; nothing
was sent), `dropped` (with a reason: `behind`, `edge_unavailable`, `deadline_missed`,
`edge_error:<code>`, `policy_skip`, `no_local_model`, `shutdown`, `failed`).

When the edge answered a frame without a result, the outcome carries the typed error it answered
with (`error`: a `shared.errors.FrameError`); the reason is spelled from it. Results are
`shared.results` types, as the edge and the local model produce them. Never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from device_client.sources import Frame
from shared.bundle import Branch
from shared.errors import DeadlineMissed, FrameError
from shared.results import Classification, Detection, Results, ServerTimings

OutcomeKind = Literal["edge", "local", "tracked", "prefiltered", "dropped"]
NO_RESULTS = Results()


def failure_reason(error: FrameError) -> str:
    """The outcome reason for an edge's in-band error: its deadline miss is the device's own."""
    if isinstance(error, DeadlineMissed):
        return "deadline_missed"
    return f"edge_error:{error.code_name}"


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
    results: Results = NO_RESULTS
    server: ServerTimings | None = None
    decision: dict[str, Any] | None = None  # the adaptive scheduler's choice and predictions
    error: FrameError | None = None  # what the edge answered instead of a result

    @property
    def detections(self) -> tuple[Detection, ...]:
        return self.results.detections

    @property
    def classifications(self) -> tuple[Classification, ...]:
        return self.results.classifications

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
            "detections": [d.to_json() for d in self.results.detections],
            "classifications": [c.to_json() for c in self.results.classifications],
        }
        if self.decision is not None:
            record["decision"] = self.decision
        if self.server is not None:
            record["server_ms"] = self.server.to_json()
        if self.error is not None:
            record["error"] = {"type": type(self.error).__name__, "message": str(self.error)}
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
