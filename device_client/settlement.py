"""Where every frame ends: its `Outcome` is built, counted and handed on, exactly once.

    settlement.settle(outcome_of(job, "edge", results=..., server=...))   # exactly once a frame
    fallback.run(job, "deadline_missed", inline=False)          # local.onnx or drop, as configured

`Settlement.settle` is the one place an outcome leaves the pipeline: metrics, the tracker's seed,
the policy, the sinks, and last the tally (the pipeline drains on the tally, so by then the sinks
have the outcome). `Fallback` runs the bundle's local model for frames the edge did not answer,
on the pipeline thread when asked (`inline`: the edge was unreachable at send time, and the
slower local model is the backpressure), else on its own worker (replies arrive on the uplink's
thread, which must keep reading).

Never imports torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from device_client.config import FailureAction, PipelineConfig
from device_client.local import LocalRunner
from device_client.metrics import DeviceMetrics
from device_client.outcomes import NO_RESULTS, FrameJob, Outcome, OutcomeKind
from device_client.policy import BranchPolicy
from device_client.sinks import Sink
from device_client.tracker import BoxTracker
from shared.bundle import Task
from shared.errors import FrameError
from shared.results import Results, ServerTimings

log = logging.getLogger("splitedge.device.pipeline")


@dataclass
class Tally:
    """Frames in, outcomes out; `seen == sum(outcomes)` once the pipeline has drained."""

    seen: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    late_replies: int = 0

    @property
    def settled(self) -> int:
        return sum(self.outcomes.values())


class Settlement:
    def __init__(
        self,
        *,
        stream_id: str,
        policy: BranchPolicy,
        sink: Sink,
        metrics: DeviceMetrics,
        tracker: BoxTracker | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.policy = policy
        self.sink = sink
        self.metrics = metrics
        self.tracker = tracker
        self.tally = Tally()
        self._lock = threading.Lock()

    # -- counting --------------------------------------------------------------------------------
    def seen(self) -> None:
        with self._lock:
            self.tally.seen += 1

    def late_reply(self) -> None:
        with self._lock:
            self.tally.late_replies += 1

    def unsettled(self) -> bool:
        with self._lock:
            return self.tally.settled < self.tally.seen

    # -- outcomes --------------------------------------------------------------------------------
    def settle(self, outcome: Outcome) -> None:
        """The one place an outcome leaves: sinks, metrics, the policy, the tally."""
        self.metrics.outcomes.labels(outcome.kind, outcome.reason or "").inc()
        for stage, ms in outcome.timings_ms.items():
            self.metrics.stage_seconds.labels(stage).observe(ms / 1e3)
        if outcome.bytes_sent and outcome.branch:
            self.metrics.bytes_sent.labels(outcome.branch).inc(outcome.bytes_sent)
        if self.tracker is not None and outcome.kind in ("edge", "local"):
            # A detection (from the edge or local.onnx) becomes what later frames are tracked from.
            self.tracker.seed(outcome.frame_id, outcome.detections)
        try:
            self.policy.observe(outcome)
        except Exception:
            log.exception("policy.observe failed on frame %d", outcome.frame_id)
        self.sink.write(outcome.to_json(self.stream_id))
        # Counted last: the pipeline drains on the tally, so the sinks have the outcome by then.
        with self._lock:
            self.tally.outcomes[outcome.kind] += 1
            if outcome.reason:
                self.tally.reasons[outcome.reason] += 1


def outcome_of(
    job: FrameJob,
    kind: OutcomeKind,
    reason: str | None = None,
    results: Results = NO_RESULTS,
    server: ServerTimings | None = None,
    error: FrameError | None = None,
) -> Outcome:
    frame = job.frame
    timings = {**job.timings_ms, "total": (time.monotonic() - frame.captured) * 1e3}
    return Outcome(
        frame_id=frame.frame_id,
        kind=kind,
        capture_time_ns=frame.capture_time_ns,
        reason=reason,
        branch=job.branch.id if job.branch is not None else None,
        timings_ms=timings,
        bytes_sent=job.bytes_sent,
        prefilter_score=job.prefilter_score,
        results=results,
        server=server,
        decision=job.decision,
        error=error,
    )


class Fallback:
    """Frames without an edge result: the bundle's local model, or dropped, per config."""

    def __init__(
        self,
        local: LocalRunner | None,
        tasks: tuple[Task, ...],
        config: PipelineConfig,
        settlement: Settlement,
    ) -> None:
        self.local = local
        self.tasks = tasks
        self.config = config
        self.settlement = settlement
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="fallback")

    def run(
        self, job: FrameJob, reason: str, error: FrameError | None = None, inline: bool = False
    ) -> None:
        """The edge gave no result: local.onnx or drop, as configured for `reason`."""
        action: FailureAction = (
            self.config.on_deadline_miss
            if reason == "deadline_missed"
            else self.config.on_edge_failure
        )
        if action == "drop":
            self.settlement.settle(outcome_of(job, "dropped", reason, error=error))
        elif inline:
            self.local_now(job, reason, error)
        else:
            work = self._worker.submit(self._local, job, reason, error)
            work.add_done_callback(self._settle_future)

    def local_now(self, job: FrameJob, reason: str, error: FrameError | None = None) -> None:
        """local.onnx on the calling thread (the policy chose it, or the inline fallback)."""
        self.settlement.settle(self._local(job, reason, error))

    def close(self) -> None:
        self._worker.shutdown(wait=True)

    def _settle_future(self, work: Future[Outcome]) -> None:
        self.settlement.settle(work.result())

    def _local(self, job: FrameJob, reason: str, error: FrameError | None) -> Outcome:
        if self.local is None:
            return outcome_of(job, "dropped", "no_local_model", error=error)
        started = time.perf_counter()
        try:
            results = self.local.run(job.frame.image, self.tasks)
        except Exception:
            log.exception("frame %d: local fallback failed", job.frame.frame_id)
            return outcome_of(job, "dropped", "failed", error=error)
        job.timings_ms["local"] = (time.perf_counter() - started) * 1e3
        return outcome_of(job, "local", reason, results, error=error)
