"""How long one frame of a branch takes: a robust, decaying estimate for deadline decisions.

The batcher refuses a frame it expects to finish after its deadline, so this estimate decides who
is served. It must survive a hostile or unlucky observation: it is the median of the recent
seconds-per-frame of batches, over the last `window` observations and the last `horizon_s`
seconds only. One outlier (a 6 s batch among 10 ms ones) moves a median by one rank, not by
600x; old observations age out, so even a run of slow batches is forgotten once they stop. With
nothing recent, the manifest's profiled figure (the prior) stands in.

Pure bookkeeping: no threads, no event loop; the caller passes `now` (time.monotonic seconds).
"""

from __future__ import annotations

import statistics
from collections import deque


class FrameCostEstimate:
    """Seconds per frame, from recent (seconds, frames) observations of whole batches."""

    def __init__(self, prior_s: float = 0.0, window: int = 16, horizon_s: float = 20.0) -> None:
        self.prior_s = prior_s
        self.horizon_s = horizon_s
        self._recent: deque[tuple[float, float]] = deque(maxlen=window)  # (when, s per frame)
        self.last_observed = float("-inf")

    def observe(self, seconds: float, frames: int, now: float) -> None:
        self._recent.append((now, seconds / max(1, frames)))
        self.last_observed = now

    def per_frame(self, now: float) -> float:
        while self._recent and now - self._recent[0][0] > self.horizon_s:
            self._recent.popleft()
        if not self._recent:
            return self.prior_s
        return statistics.median(cost for _, cost in self._recent)

    def batch(self, frames: int, now: float) -> float:
        """Seconds for a batch of `frames` (linear in the frame count: conservative for a tail
        whose batches amortise a fixed cost)."""
        return frames * self.per_frame(now)

    def stale(self, now: float, after_s: float) -> bool:
        """Nothing observed for `after_s`: time to let one frame through to re-measure."""
        return now - self.last_observed > after_s
