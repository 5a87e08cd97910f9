"""The adaptive policy: per frame, the plan predicted to meet the SLA that is worth the most: its
accuracy less the price of its bytes (ApproxDet, with bytes priced).

A plan is a branch of the bundle (a split width, a full-frame image codec, or the local model)
and a sampling interval k: detect every k-th frame, track the boxes on the frames between.

Latency model, a high percentile rather than the mean (each term an EWMA with its deviation; a
plan's prediction is the sum of the means plus two deviations of the sum):

    split/jpeg/webp:  device ms × contention + bytes ÷ throughput + RTT + edge queue + edge ms
    local:            local model ms × contention
    tracked frame:    tracker ms

and a plan must also be sustainable at the frame rate: its bytes per second fit in
`link_utilization` of the throughput estimate, and its device time per second (detections at
1/k of the frames, tracking on the rest) in `device_utilization` of a second.

Accuracy model: the branch's measured accuracy from the bundle manifest × the share of accuracy
kept at interval k (`scheduler.interval_accuracy`, measured offline on annotated clips).

Decision: among the plans whose predicted latency ≤ SLA ÷ margin (1.3, as ApproxDet) and that are
sustainable, the one of most value — its accuracy less `byte_price` per KB it sends a frame
(fewer bytes on a tie). ApproxDet weighs accuracy alone; its branches all run on the device. Here
a byte is a risk as well as a cost: a link that collapses holds every byte already sent, and the
frames behind them wait until they drain (a 10 KB JPEG takes 4 s at 20 kbit/s), so a frame's
bytes must buy accuracy; if none, the fastest sustainable plan
(if none is sustainable, the fastest at the longest interval). Hysteresis: the current plan is
kept while it still fits unless a better one has won `switch_up_after` decisions in a row and
adds at least `min_gain`; a plan that no longer fits is left at once (fall fast, rise slowly).
Switching width or image quality is free: the heads are loaded once, the codecs are parameters.

Probing: a split latent is too small to show that the link got better, so when a more accurate
remote plan is ruled out by the link alone, one frame now and then takes that branch instead
(`LinkEstimator.probe_due`: at most `probe_budget` of the link's capacity). The probe is a real
frame with a real result, not padding. On `local` nothing is sent, so the round trip and the
edge's load that an outage or a busy edge drove up would never be measured again: there a remote
plan ruled out by the network or the edge at all is probed, the cheapest first. A small frame
sent while a probe is still unanswered waited behind it on the uplink: its round trip is the
probe's, not the link's, and the estimate skips it (Karn's rule). An outage pushes the round
trip up with every frame that finds no reply; once several have in a row, the first reply
shorter than the estimate restarts it (`LinkEstimator.stale_after_timeouts`, as RFC 6298 lets
TCP clear srtt after repeated backoffs), so one good probe brings the edge back rather than the
dozen an EWMA needs to forget a stall. The first replies back still wait on the queues the stall
left, so each of the first few restarts it again if shorter (`recovery_replies`): the estimate
starts from the least of them.

Never imports torch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from device_client.config import SchedulerConfig
from device_client.estimators import Contention, EdgeLoad, Ewma, LinkEstimator
from device_client.metrics import DeviceMetrics
from device_client.outcomes import Outcome
from device_client.policy import RUNNABLE_KINDS, Choice
from device_client.sources import Frame
from shared.bundle import Branch, Manifest
from shared.errors import ConfigError

REMOTE_KINDS = ("split", "jpeg", "webp")
REQUEST_OVERHEAD_BYTES = 120  # ids, sizes, times and gRPC framing around the payload
BEHIND_LIMIT = 1024  # frame ids remembered as sent behind a probe
SPREAD = 2.0  # deviations above the mean a prediction allows: ≈ the 90th–95th percentile


@dataclass(frozen=True)
class Plan:
    branch: Branch
    interval: int
    latency_ms: float
    accuracy: float
    value: float  # accuracy less the price of its bytes: what the decision maximizes
    fits: bool
    sustainable: bool  # its bytes and device time per second fit, whatever its latency
    link_limited: bool  # does not fit, but would at any throughput: a probe may show it does
    # a remote plan that only the network or the edge rules out (this device's part fits): while
    # no remote frame flows, their estimates are never refreshed, and only a probe renews them
    remote_limited: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return (self.branch.id, self.interval)


class AdaptivePolicy:
    def __init__(
        self,
        manifest: Manifest,
        config: SchedulerConfig,
        sla_ms: float,
        fps: float,
        metrics: DeviceMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if sla_ms <= 0:
            raise ConfigError(f"the adaptive policy needs an SLA > 0 ms, got {sla_ms}")
        if fps <= 0:
            raise ConfigError(f"the adaptive policy needs a frame rate > 0, got {fps}")
        self.config = config
        self.sla_ms = sla_ms
        self.fps = config.fps or fps
        self.metrics = metrics
        self.clock = clock
        self.branches = _candidates(manifest, config.branches)
        self.link = LinkEstimator(
            initial_mbit=config.initial_mbit,
            safety=config.safety,
            probe_budget=config.probe_budget,
            recovery_replies=config.recovery_replies,
        )
        self.edge = EdgeLoad()
        self.device = Contention()
        self.track_ms = Ewma(alpha=0.2)
        self.bytes_seen: dict[str, Ewma] = {}
        self.switches = 0
        self._accuracy = dict(zip(config.intervals, config.interval_accuracy, strict=True))
        self._current: Plan | None = None
        self._better_streak = 0
        self._group_left = 0
        # Karn's rule (TCP ignores the round trip of a retransmitted segment): a small frame
        # sent while a probe was unanswered waited behind it on the uplink, so its round trip
        # measures the probe, which no plan repeats, not the link. (Frames queued behind the
        # plan's own large frames do count: such a backlog is the link failing the plan.)
        # Probe frame id → when it was sent; the ids of frames sent behind one.
        self._probes_out: dict[int, float] = {}
        self._behind: set[int] = set()
        self._lock = threading.Lock()
        self.link.probed(clock())  # the probe budget accrues from the start

    def calibrate(
        self,
        head_ms: dict[float, float],
        local_ms: float | None,
        overhead_ms: float | None = None,
        image_ms: dict[str, float] | None = None,
    ) -> None:
        """Start from costs measured on this device (the runners' warm-up), not the bundle's
        profile from another machine: the first decisions are then about this device's load.
        `overhead_ms`: preprocess + prefilter, warm. Without it the first frame's would be the
        estimate, and a first frame is slow (a cold cache, a CPU quota the warm-up spent): at
        70 ms × 15 fps no plan looks sustainable until a slow EWMA forgets it. `image_ms`: each
        image branch's encode, by branch id."""
        with self._lock:
            if overhead_ms is not None:
                self.device.overhead.add(overhead_ms)
            for branch in self.branches:
                if branch.kind == "split" and branch.width in head_ms:
                    self.device.observe(branch.id, head_ms[branch.width], branch.device_ms)
                elif branch.kind == "local" and local_ms is not None:
                    self.device.observe(branch.id, local_ms, branch.device_ms)
                elif image_ms is not None and branch.id in image_ms:
                    self.device.observe(branch.id, image_ms[branch.id], branch.device_ms)

    # -- BranchPolicy ------------------------------------------------------------------------------
    def choose(self, frame: Frame) -> Choice:
        with self._lock:
            current = self._current
            if current is not None and self._group_left > 0:
                self._group_left -= 1
                return Choice(
                    current.branch,
                    track=True,
                    interval=current.interval,
                    predicted_ms=self.track_ms.upper() or 1.0,
                    predicted_accuracy=current.accuracy,
                )
            plans = self.plans()
            plan = self._decide(plans)
            self._group_left = plan.interval - 1
            probe = self._probe(plan, plans)
            if self.metrics is not None:
                self.metrics.decisions.labels((probe or plan.branch).id).inc()
            self._note_send(frame.frame_id, probe is not None, probe or plan.branch)
            if probe is not None:
                return Choice(
                    probe,
                    interval=plan.interval,
                    probe=True,
                    predicted_ms=self.predict_ms(probe),
                    predicted_accuracy=self.accuracy(probe, 1),
                    link_mbit=self.link.estimate().throughput_mbit,
                )
            return Choice(
                plan.branch,
                interval=plan.interval,
                predicted_ms=plan.latency_ms,
                predicted_accuracy=plan.accuracy,
                link_mbit=self.link.estimate().throughput_mbit,
            )

    def observe(self, outcome: Outcome) -> None:
        t = outcome.timings_ms
        branch = outcome.branch
        with self._lock:
            self._probes_out.pop(outcome.frame_id, None)
            queued = outcome.frame_id in self._behind
            self._behind.discard(outcome.frame_id)
            if "preprocess" in t:
                self.device.overhead.add(t["preprocess"] + t.get("prefilter", 0.0))
            if outcome.kind == "tracked":
                if "track" in t:
                    self.track_ms.add(t["track"])
                return
            if branch is None:
                return
            spec = next((b for b in self.branches if b.id == branch), None)
            profiled = spec.device_ms if spec is not None else None
            if outcome.kind == "edge" and outcome.server is not None:
                server = outcome.server
                if "uplink" in t:
                    network_ms = t["uplink"] - server.total_ms
                    self.link.observe_transfer(outcome.bytes_sent, network_ms, queued=queued)
                self.edge.observe(branch, server.queue_wait_ms, server.decode_ms + server.tail_ms)
                self.bytes_seen.setdefault(branch, Ewma(alpha=0.1)).add(outcome.bytes_sent)
            elif outcome.reason == "deadline_missed" and outcome.bytes_sent:
                self.link.observe_timeout(
                    outcome.bytes_sent, t.get("uplink", self.sla_ms), queued=queued
                )
            if outcome.kind == "local" and outcome.reason == "policy" and "local" in t:
                self.device.observe(branch, t["local"], profiled)
            elif "head" in t:  # split: the head is what the bundle profiled
                self.device.observe(branch, t["head"] + t.get("encode", 0.0), profiled)
            elif "encode" in t and spec is not None and spec.kind in ("jpeg", "webp"):
                self.device.observe(branch, t["encode"], profiled)
            self._publish()

    # -- the models --------------------------------------------------------------------------------
    def predict_ms(self, branch: Branch) -> float:
        transfer, rest, _ = self.latency_terms(branch)
        return transfer + rest

    def latency_terms(self, branch: Branch) -> tuple[float, float, float]:
        """(ms the link's throughput adds, every other ms, this device's own ms) of one frame on
        `branch`, at a high percentile: the terms' means plus `SPREAD` deviations of their sum.
        The terms vary independently, so the sum's deviation is the root of their squares, not
        their sum: adding each term's own percentile would promise a frame that never happens."""
        device = self.device.term(branch.id, branch.device_ms)
        own = device[0] + SPREAD * device[1]
        if branch.kind not in REMOTE_KINDS:
            return 0.0, own, own
        link = self.link.estimate()
        transfer = self._bytes_high(branch) * 8 / (link.throughput_mbit * 1e3)
        terms = [device, (link.rtt_mean_ms, link.rtt_deviation_ms)]
        terms += self.edge.terms(branch.id, branch.edge_ms)
        mean = sum(m for m, _ in terms)
        deviation = sum(d * d for _, d in terms) ** 0.5
        return transfer, mean + SPREAD * deviation, own

    def accuracy(self, branch: Branch, interval: int) -> float:
        return (branch.accuracy or 0.0) * self._accuracy[interval]

    def plans(self) -> list[Plan]:
        budget = self.sla_ms / self.config.margin
        link_mbit = self.link.estimate().throughput_mbit
        # Sustainability is about averages: mean costs against the second's budget, after what
        # every frame costs before a branch runs.
        track_ms = self.track_ms.mean or 2.0
        budget_ms = 1000 * self.config.device_utilization - (self.device.overhead.mean or 0.0) * (
            self.fps
        )
        plans = []
        for branch in self.branches:
            transfer, rest, own_ms = self.latency_terms(branch)
            latency = transfer + rest
            device = self.device.mean_ms(branch.id, branch.device_ms)
            sent = self._bytes_mean(branch) if branch.kind in REMOTE_KINDS else 0.0
            for k in self.config.intervals:
                per_second_device = (device + (k - 1) * track_ms) / k * self.fps
                device_ok = per_second_device <= budget_ms
                link_ok = True
                if branch.kind in REMOTE_KINDS:
                    mbit = sent * 8 * self.fps / k / 1e6
                    link_ok = mbit <= link_mbit * self.config.link_utilization
                fits = latency <= budget and device_ok and link_ok
                # Ruled out by the link alone: it would fit at any throughput.
                link_limited = not fits and device_ok and rest <= budget
                remote_limited = (not fits and device_ok and branch.kind in REMOTE_KINDS
                                  and own_ms <= budget)
                accuracy = self.accuracy(branch, k)
                plans.append(
                    Plan(
                        branch,
                        k,
                        latency,
                        accuracy,
                        accuracy - self.config.byte_price * sent / k / 1e3,
                        fits,
                        device_ok and link_ok,
                        link_limited,
                        remote_limited,
                    )
                )
        return plans

    # -- decisions ---------------------------------------------------------------------------------
    def _decide(self, plans: list[Plan]) -> Plan:
        fitting = [p for p in plans if p.fits]
        if fitting:
            best = max(fitting, key=lambda p: (p.value, -self._bytes_mean(p.branch)))
        else:
            # Nothing meets the SLA: the fastest plan the device and link can sustain (the most
            # accurate of equally fast ones: sampling does not shorten a frame's latency); if
            # none is sustainable, the fastest with as few detections as the knobs allow.
            sustainable = [p for p in plans if p.sustainable]
            if sustainable:
                best = min(sustainable, key=lambda p: (p.latency_ms, -p.value))
            else:
                best = min(plans, key=lambda p: (p.latency_ms, -p.interval))
        current = self._current
        if current is not None:
            now = next(p for p in plans if p.key == current.key)
            if now.fits and best.key != now.key:
                if best.value <= now.value + self.config.min_gain:
                    self._better_streak = 0
                    best = now
                else:
                    # Some better plan must have won this many decisions in a row (not always
                    # the same one: near-equal plans take turns at the top).
                    self._better_streak += 1
                    if self._better_streak < self.config.switch_up_after:
                        best = now
            elif not now.fits and not fitting and now.latency_ms <= best.latency_ms:
                best = now  # nothing fits: do not flap between equally hopeless plans
        if current is None or best.key != current.key:
            if current is not None:
                self.switches += 1
            self._better_streak = 0
        self._current = best
        return best

    def _probe(self, plan: Plan, plans: list[Plan]) -> Branch | None:
        """A more accurate remote branch the link alone rules out (or, while nothing remote
        flows, the network or the edge at all), when a probe is due."""
        silent = plan.branch.kind not in REMOTE_KINDS
        candidates = [
            p.branch
            for p in plans
            if p.interval == plan.interval
            and (p.link_limited or (silent and p.remote_limited))
            and p.value > plan.value + self.config.min_gain
        ]
        if not candidates:
            return None
        smallest = min(candidates, key=self._bytes_mean)
        now = self.clock()
        if not self.link.probe_due(now, self._bytes_mean(smallest)):
            return None
        self.link.probed(now)
        if self.metrics is not None:
            self.metrics.probes.inc()
        return smallest

    # -- helpers -----------------------------------------------------------------------------------
    def _note_send(self, frame_id: int, probe: bool, branch: Branch) -> None:
        """Mark a remote frame as a probe out, or as a small frame sent behind a probe still
        unanswered (its round trip is ambiguous: `LinkEstimator` skips it)."""
        if branch.kind not in REMOTE_KINDS:
            return
        now = self.clock()
        # Every frame settles by its deadline; a probe not heard of long after that must not
        # make every later round trip ambiguous.
        horizon = now - max(2.0, 4 * self.sla_ms / 1e3)
        for stale in [i for i, sent in self._probes_out.items() if sent < horizon]:
            del self._probes_out[stale]
        if probe:
            self._probes_out[frame_id] = now
        elif self._probes_out and self._bytes_mean(branch) < self.link.min_rate_bytes:
            if len(self._behind) >= BEHIND_LIMIT:
                self._behind.clear()  # outcomes never observed (a test harness): start over
            self._behind.add(frame_id)

    def _bytes_mean(self, branch: Branch) -> float:
        seen = self.bytes_seen.get(branch.id)
        if seen is not None and seen.mean is not None:
            return seen.mean
        return (branch.expected_bytes or 0.0) + REQUEST_OVERHEAD_BYTES

    def _bytes_high(self, branch: Branch) -> float:
        seen = self.bytes_seen.get(branch.id)
        upper = seen.upper() if seen is not None else None
        if upper is not None:
            return upper
        return 1.5 * (branch.expected_bytes or 0.0) + REQUEST_OVERHEAD_BYTES

    def _publish(self) -> None:
        if self.metrics is None:
            return
        link = self.link.estimate()
        self.metrics.link_mbit.set(link.throughput_mbit)
        self.metrics.rtt_ms.set(link.rtt_ms)
        self.metrics.contention.set(self.device.factor)
        self.metrics.edge_queue_ms.set(self.edge.queue_ms())


def _candidates(manifest: Manifest, allowed: tuple[str, ...]) -> list[Branch]:
    runnable = [b for b in manifest.branches if b.kind in RUNNABLE_KINDS and b.kind != "skip"]
    if allowed:
        unknown = sorted(set(allowed) - {b.id for b in runnable})
        if unknown:
            raise ConfigError(
                f"pipeline.scheduler.branches names {unknown}, not runnable branches of bundle "
                f"{manifest.name}; it has {sorted(b.id for b in runnable)}"
            )
        runnable = [b for b in runnable if b.id in allowed]
    usable = [b for b in runnable if b.accuracy is not None and b.device_ms is not None]
    if not usable:
        raise ConfigError(
            f"bundle {manifest.name} has no branch with a measured accuracy and device_ms: "
            "the adaptive policy has nothing to weigh (use pipeline.policy: fixed)"
        )
    return usable
