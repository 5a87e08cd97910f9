"""What the scheduler knows about the link, the edge and this device, learned from outcomes.

- `LinkEstimator`: uplink throughput and round trip. Throughput follows the practice of video
  ABR (dash.js) and AWStream: a fast and a slow EWMA of per-transfer rates, each weighted by the
  transfer's duration, and the estimate is the smaller of the two times a safety factor, so it
  falls fast and rises slowly. The round trip is tracked apart (srtt + 2·rttvar, as TCP keeps
  it), from the frames too small to measure throughput — a split latent of a few hundred bytes
  is all round trip, and only bounds the rate from below. Because such frames cannot show that
  the link got better, the scheduler probes (AWStream): now and then one frame takes a larger
  branch, within `probe_budget` of the link's
  estimated capacity (`probe_due`). A frame that found no reply by its deadline bounds the rate
  from above (its bytes did not arrive in that time), which is how an outage is seen.
- `EdgeLoad`: the edge's queue wait, and its decode + tail time per branch, from the reply's
  stage timings.
- `Contention`: this device's load, as measured stage latency ÷ the bundle's profiled latency
  (ApproxDet infers contention the same way), plus what each branch really costs here.

Each figure is an `Ewma` with a deviation, so the scheduler can ask for a high percentile
(`upper()`) rather than the mean. Never imports torch.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field


@dataclass
class Ewma:
    """An exponentially weighted mean and mean absolute deviation (as TCP keeps srtt/rttvar)."""

    alpha: float
    mean: float | None = None
    deviation: float = 0.0
    samples: int = 0

    def add(self, value: float, alpha: float | None = None) -> None:
        a = self.alpha if alpha is None else alpha
        self.samples += 1
        if self.mean is None:
            self.mean, self.deviation = value, abs(value) / 2
            return
        self.deviation += a * (abs(value - self.mean) - self.deviation)
        self.mean += a * (value - self.mean)

    def restart(self, value: float) -> None:
        """Forget the history: `value` is the first sample again (RFC 6298's initial rule)."""
        self.samples += 1
        self.mean, self.deviation = value, abs(value) / 2

    def upper(self, spread: float = 2.0) -> float | None:
        """mean + spread × deviation: ≈ p90–p95 for spread 2 on the latencies seen here."""
        return None if self.mean is None else self.mean + spread * self.deviation


def time_weight(seconds: float, half_life_s: float) -> float:
    """The EWMA weight of a sample that lasted `seconds`, for a mean with this half-life."""
    return 1.0 - math.pow(0.5, max(seconds, 1e-4) / half_life_s)


@dataclass
class LinkEstimate:
    throughput_mbit: float
    rtt_ms: float  # a high percentile (srtt + 2·rttvar) of a tiny frame's round trip
    rtt_mean_ms: float = 0.0
    rtt_deviation_ms: float = 0.0


@dataclass
class LinkEstimator:
    initial_mbit: float = 2.0
    safety: float = 0.9
    # Half-lives in seconds of transfer (not of wall time): a 12 KB frame at 10 Mbit/s is 10 ms.
    fast_half_life_s: float = 0.1
    slow_half_life_s: float = 0.5
    # ...and each transfer weighs at least this much: without a floor a few-ms probe would take
    # minutes of probing to show that the link got better.
    fast_floor: float = 0.25
    slow_floor: float = 0.1
    probe_budget: float = 0.05  # probe bytes ≤ this share of the estimated capacity
    min_probe_interval_s: float = 0.5
    # Frames smaller than this are all round trip on the links a camera sees: they teach the RTT,
    # not the rate (a 300-byte latent takes 2.4 ms at 1 Mbit/s).
    min_rate_bytes: int = 4096
    _fast: float = field(init=False)
    _slow: float = field(init=False)
    # TCP's rttvar gain (1/4) for both: a detection may come only every k-th frame, so the
    # round trip must recover from a bad stretch in a few samples.
    _rtt: Ewma = field(default_factory=lambda: Ewma(alpha=0.25))
    # After this many small frames in a row found no reply, the round trip they pushed up is
    # the outage's, not the link's: the next reply shorter than it restarts the estimate
    # (RFC 6298 §5 lets TCP clear srtt/rttvar after repeated backoffs). Otherwise a link that
    # came back stays ruled out for the many probes an EWMA needs to forget a second-long stall.
    stale_after_timeouts: int = 3
    # ...and the replies right after a stall are inflated by the queues it left (the uplink's
    # buffer, the edge's): in a harness run the first one back took 146 ms uplink and the next
    # ones 40-50 ms, and restarting from it alone left mean + 2 deviations near 290 ms for ~7
    # probes.
    # So each of the first `recovery_replies` replies (the restarting one included) restarts the
    # estimate again if it is shorter still: the estimate starts from the least of them, as
    # BBR keeps a windowed minimum of the round trip.
    recovery_replies: int = 3
    _timeouts_in_row: int = 0
    _recovery_left: int = 0
    _base_rtt_ms: float | None = None
    _last_probe: float | None = None
    _last_rate: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._fast = self._slow = self.initial_mbit

    # -- observations ------------------------------------------------------------------------------
    def observe_transfer(self, nbytes: int, network_ms: float, queued: bool = False) -> None:
        """A reply came: `network_ms` = uplink round trip − the server's own time. `queued`: the
        frame was sent behind this device's probe, so a small frame's round trip is the probe's,
        not the link's (Karn's rule); it still bounds the rate from below."""
        with self._lock:
            network_ms = max(network_ms, 0.01)
            base = self._base_rtt_ms
            transfer_ms = network_ms - (base or 0.0)
            # Below a millisecond or a fifth of the RTT floor, jitter is the larger part.
            if nbytes < self.min_rate_bytes or base is None or transfer_ms < max(1.0, 0.2 * base):
                if not queued:
                    self._rtt_sample(network_ms)
                    # The floor: the least round trip seen, allowed to creep up if the path
                    # changed.
                    self._base_rtt_ms = (
                        network_ms if base is None else min(network_ms, base + 0.02 * transfer_ms)
                    )
                # Still a lower bound on the rate: these bytes did cross in that time. It lifts
                # an estimate that an outage pushed below what the link now plainly carries.
                floor = nbytes * 8 / (network_ms * 1e3)
                if floor > self._fast:
                    self._fast = floor
                    self._slow = max(self._slow, floor)
                    self._last_rate = floor
                return
            self._rate_sample(nbytes * 8 / (transfer_ms * 1e3), transfer_ms / 1e3)

    def _rtt_sample(self, network_ms: float) -> None:
        mean = self._rtt.mean
        # Not shorter (a late reply, as long as the stall's own round trips): no news.
        shorter = mean is not None and network_ms < mean
        if shorter and self._timeouts_in_row >= self.stale_after_timeouts:
            self._recovery_left = self.recovery_replies
        if shorter and self._recovery_left > 0:
            self._rtt.restart(network_ms)
        else:
            self._rtt.add(network_ms)
        self._recovery_left = max(self._recovery_left - 1, 0)
        if shorter:
            self._timeouts_in_row = 0

    def observe_timeout(self, nbytes: int, waited_ms: float, queued: bool = False) -> None:
        """No reply within `waited_ms`. A large frame: the link carried less than its bytes in
        that time. A small one says less (the edge or this device may have been the slow part):
        its round trip was at least that long, which is how an outage shows on split frames —
        unless it was `queued` behind this device's probe, whose own fate says it."""
        with self._lock:
            if nbytes < self.min_rate_bytes:
                if not queued:
                    self._rtt.add(waited_ms)
                    self._timeouts_in_row += 1
                    self._recovery_left = 0  # not back after all
                return
            transfer_ms = waited_ms - (self._base_rtt_ms or 0.0)
            if transfer_ms <= 0:
                return
            bound = nbytes * 8 / (transfer_ms * 1e3)
            if bound < self._fast:
                self._rate_sample(bound, transfer_ms / 1e3)

    def _rate_sample(self, mbit: float, seconds: float) -> None:
        if mbit < self._fast:
            # Fall fast: a slower transfer is the news (AWStream drops to the measured rate).
            self._fast = mbit
        else:
            weight = max(time_weight(seconds, self.fast_half_life_s), self.fast_floor)
            self._fast += weight * (mbit - self._fast)
        weight = max(time_weight(seconds, self.slow_half_life_s), self.slow_floor)
        self._slow += weight * (mbit - self._slow)
        self._last_rate = mbit

    # -- estimates ---------------------------------------------------------------------------------
    def estimate(self) -> LinkEstimate:
        with self._lock:
            return LinkEstimate(
                self.estimate_locked(),
                self._rtt.upper(2.0) or 0.0,
                self._rtt.mean or 0.0,
                self._rtt.deviation,
            )

    def estimate_locked(self) -> float:
        return max(min(self._fast, self._slow) * self.safety, 1e-3)

    @property
    def base_rtt_ms(self) -> float | None:
        return self._base_rtt_ms

    def probe_due(self, now: float, probe_bytes: float) -> bool:
        """Whether a probe of `probe_bytes` fits the budget now: at most `probe_budget` of what
        the link carries since the last probe. Once a transfer showed more than the estimate,
        that rate is the capacity budgeted against, so a link that got better is confirmed by
        probes in quick succession."""
        with self._lock:
            if self._last_probe is None:
                return True
            capacity = max(self.estimate_locked(), self._last_rate)
            spend_s = probe_bytes * 8 / (capacity * 1e6 * self.probe_budget)
            return now - self._last_probe >= max(self.min_probe_interval_s, spend_s)

    def probed(self, now: float) -> None:
        with self._lock:
            self._last_probe = now


@dataclass
class EdgeLoad:
    """The edge's queue wait, and its decode + tail time per branch, as its replies report."""

    alpha: float = 0.2
    queue: Ewma = field(default_factory=lambda: Ewma(alpha=0.2))
    compute: dict[str, Ewma] = field(default_factory=dict)

    def observe(self, branch: str, queue_ms: float, compute_ms: float) -> None:
        self.queue.add(queue_ms)
        self.compute.setdefault(branch, Ewma(alpha=self.alpha)).add(compute_ms)

    def queue_ms(self) -> float:
        return self.queue.upper() or 0.0

    def terms(self, branch: str, profiled: float | None) -> list[tuple[float, float]]:
        """(mean, deviation) of the queue wait and of this branch's decode + tail."""
        seen = self.compute.get(branch)
        compute = (
            (seen.mean, seen.deviation)
            if seen is not None and seen.mean is not None
            else (profiled or 0.0, 0.0)
        )
        return [(self.queue.mean or 0.0, self.queue.deviation), compute]



@dataclass
class Contention:
    """Device load: measured ÷ profiled latency of the same work, and each branch's real cost.

    `factor` scales the profiled cost of branches this device has not run lately; a branch it
    has run is predicted from its own measured cost (already contended)."""

    alpha: float = 0.2
    ratio: Ewma = field(default_factory=lambda: Ewma(alpha=0.2))
    cost: dict[str, Ewma] = field(default_factory=dict)
    # What every frame costs before any branch runs (preprocess, prefilter): it comes out of the
    # frame rate's budget whatever the plan.
    overhead: Ewma = field(default_factory=lambda: Ewma(alpha=0.1))

    def observe(self, branch: str, measured_ms: float, profiled_ms: float | None) -> None:
        self.cost.setdefault(branch, Ewma(alpha=self.alpha)).add(measured_ms)
        if profiled_ms and profiled_ms > 0:
            self.ratio.add(measured_ms / profiled_ms)

    @property
    def factor(self) -> float:
        return max(self.ratio.mean or 1.0, 1.0)

    def term(self, branch: str, profiled_ms: float | None) -> tuple[float, float]:
        """(mean, deviation) of one frame's cost on `branch` here."""
        seen = self.cost.get(branch)
        if seen is not None and seen.mean is not None:
            return seen.mean, seen.deviation
        return (profiled_ms or 0.0) * self.factor, 0.0

    def mean_ms(self, branch: str, profiled_ms: float | None) -> float:
        """One frame's mean cost on `branch` here: what the frame rate must sustain."""
        return self.term(branch, profiled_ms)[0]
