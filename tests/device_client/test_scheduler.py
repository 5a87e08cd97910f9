"""The adaptive policy: its estimators, its decisions, the tracker, and the whole loop against a
real edge server behind a simulated link whose rate drops mid-clip."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_client.config import EdgeConfig, GeneratedSource, PipelineConfig, SchedulerConfig
from device_client.estimators import LinkEstimator
from device_client.grpc_uplink import GrpcUplink
from device_client.head import HeadRunner
from device_client.local import LocalRunner
from device_client.metrics import DeviceMetrics
from device_client.outcomes import Outcome
from device_client.pipeline import Pipeline
from device_client.policy import FixedBranch
from device_client.scheduler import AdaptivePolicy
from device_client.simlink import SimulatedLink
from device_client.sources import Frame, GeneratedFrames, ShapesGenerator
from device_client.tracker import BoxTracker
from device_client.uplink import InMemoryUplink
from shared.bundle import Branch, Manifest, load_bundle
from shared.errors import ConfigError
from shared.results import Detection, ServerTimings
from shared.wire import pb
from tests.device_client.bundle_factory import scene
from tests.device_client.conftest import DaemonProcess, EdgeProcess, free_port
from tests.device_client.test_pipeline import ListSink, answer_ok

# -- a manifest with a real trade-off ----------------------------------------------------------
SPLIT = Branch(id="split-w100", kind="split", width=1.0, codec="FACTORIZED_ANS",
               expected_bytes=300, device_ms=4, edge_ms=8, accuracy=0.43)
SMALL = Branch(id="split-w050", kind="split", width=0.5, codec="FACTORIZED_ANS",
               expected_bytes=200, device_ms=3, edge_ms=8, accuracy=0.40)
JPEG = Branch(id="jpeg-q90", kind="jpeg", codec="JPEG", expected_bytes=12000, device_ms=1,
              edge_ms=15, accuracy=0.54)
LOCAL = Branch(id="local", kind="local", expected_bytes=0, device_ms=70, edge_ms=0,
               accuracy=0.30)


def manifest_with(base: Manifest, *branches: Branch) -> Manifest:
    return base.model_copy(update={"branches": branches})


@pytest.fixture(scope="module")
def manifest(bundle_dir: Path) -> Manifest:
    return manifest_with(load_bundle(bundle_dir).manifest, SPLIT, SMALL, JPEG, LOCAL)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frame(i: int) -> Frame:
    return Frame(i, np.zeros((8, 8, 3), np.uint8), time.monotonic(), time.time_ns())


def edge_outcome(branch: Branch, nbytes: int, network_ms: float, i: int = 0) -> Outcome:
    server = ServerTimings(queue_wait_ms=1.0, decode_ms=1.0, tail_ms=branch.edge_ms or 0,
                           total_ms=2.0 + (branch.edge_ms or 0), batch_size=1)
    return Outcome(i, "edge", 0, branch=branch.id, bytes_sent=nbytes, server=server,
                   timings_ms={"uplink": network_ms + server.total_ms, "encode": 1.0})


def feed_link(policy: AdaptivePolicy, mbit: float, rtt_ms: float = 10.0, frames: int = 10) -> None:
    """Outcomes as a link of `mbit` would give them: small frames teach the RTT, JPEGs the rate."""
    for _ in range(frames):
        policy.observe(edge_outcome(SPLIT, 320, rtt_ms))
        policy.observe(edge_outcome(JPEG, 12000, rtt_ms + 12000 * 8 / (mbit * 1e3)))


# -- configuration --------------------------------------------------------------------------------
def test_bad_scheduler_config_is_a_clear_startup_error(tmp_path: Path) -> None:
    from device_client.config import load_settings

    base = {"bundle": {"path": str(tmp_path)}, "source": {"kind": "generated"}}
    for pipeline, edge, expect in (
        ({"policy": "greedy"}, {}, "pipeline.policy"),
        ({"policy": "adaptive", "scheduler": {"margin": 1.0}}, {}, "margin"),
        ({"policy": "adaptive"}, {"sla_ms": 0}, "sla_ms"),
        ({"scheduler": {"intervals": [1, 2], "interval_accuracy": [1.0]}}, {}, "intervals"),
    ):
        with pytest.raises(ConfigError, match=expect):
            load_settings(None, **base, pipeline=pipeline, edge=edge)


def test_policy_refuses_what_it_cannot_plan(manifest: Manifest) -> None:
    with pytest.raises(ConfigError, match="SLA"):
        AdaptivePolicy(manifest, SchedulerConfig(), sla_ms=0, fps=15)
    with pytest.raises(ConfigError, match="nope"):
        AdaptivePolicy(manifest, SchedulerConfig(branches=("nope",)), sla_ms=300, fps=15)
    unmeasured = manifest_with(manifest, SPLIT.model_copy(update={"accuracy": None}))
    with pytest.raises(ConfigError, match="measured accuracy"):
        AdaptivePolicy(unmeasured, SchedulerConfig(), sla_ms=300, fps=15)


# -- estimators -----------------------------------------------------------------------------------
def test_link_estimate_follows_a_step_on_the_simulated_link() -> None:
    """10 → 0.3 → 10 Mbit/s, 12 KB frames: the estimate falls within a few frames; rising back
    it is slower (safety first) but gets there within a bounded number."""
    def instant(request: pb.InferRequest) -> pb.InferResponse:
        reply = answer_ok(request)
        reply.timings.total_ms = 0.0  # the in-memory edge takes no time of its own
        return reply

    link = SimulatedLink(InMemoryUplink(instant), mbit=10, rtt_ms=4)
    link.start()
    estimator = LinkEstimator(initial_mbit=2.0)
    request = pb.InferRequest(image=pb.EncodedImage(codec=pb.CODEC_JPEG, data=bytes(12000)))
    small = pb.InferRequest(image=pb.EncodedImage(codec=pb.CODEC_JPEG, data=bytes(300)))

    def send(req: pb.InferRequest) -> None:
        start = time.monotonic()
        reply = link.send(req).result(timeout=10)
        rtt = (time.monotonic() - start) * 1e3
        estimator.observe_transfer(req.ByteSize(), rtt - reply.timings.total_ms)

    try:
        for _ in range(4):
            send(small)
        for _ in range(8):
            send(request)
        high = estimator.estimate().throughput_mbit
        assert 5 < high <= 10
        link.set_rate(0.3)
        falls = next(i for i in range(1, 6) if (send(request), estimator.estimate())[1]
                     .throughput_mbit < 0.5)
        link.set_rate(10)
        rises = next(i for i in range(1, 40) if (send(request), estimator.estimate())[1]
                     .throughput_mbit > 4)
    finally:
        link.close()
    assert falls == 1, "the estimate must fall at the first slow transfer"
    assert rises > falls, "rise slowly"
    assert estimator.base_rtt_ms is not None and estimator.base_rtt_ms < 20


def test_probing_finds_the_better_link_within_its_budget(manifest: Manifest) -> None:
    clock = Clock()
    policy = AdaptivePolicy(manifest, SchedulerConfig(), sla_ms=300, fps=15, clock=clock)
    feed_link(policy, mbit=10)
    assert policy.choose(frame(0)).branch.id == "jpeg-q90"
    for _ in range(3):  # the link drops: JPEGs time out
        policy.observe(Outcome(1, "local", 0, reason="deadline_missed", branch="jpeg-q90",
                               bytes_sent=12000, timings_ms={"uplink": 300.0}))
    choices = []
    probe_bytes = 0
    sent_bytes = 0
    for i in range(1, 400):  # 15 fps: clock moves 66 ms a frame
        clock.now += 1 / 15
        choice = policy.choose(frame(i))
        choices.append(choice)
        if choice.track:
            continue
        if choice.probe:  # the link is back at 10 Mbit/s: the probe's bytes show it
            probe_bytes += 12000
            policy.observe(edge_outcome(JPEG, 12000, 10 + 12000 * 8 / 10e3))
        elif choice.branch.id == "jpeg-q90":
            sent_bytes += 12000
            policy.observe(edge_outcome(JPEG, 12000, 10 + 12000 * 8 / 10e3))
            break
        else:
            sent_bytes += 320
            policy.observe(edge_outcome(choice.branch, 320, 10.0))
    kinds = [c.branch.id for c in choices if not c.track and not c.probe]
    assert kinds[0] != "jpeg-q90", "after the drop the policy leaves the JPEG branch"
    assert choices[-1].branch.id == "jpeg-q90" and not choices[-1].probe, "probing found it"
    assert len(choices) < 200
    assert sum(c.probe for c in choices) >= 1


def test_frames_sent_behind_a_probe_do_not_teach_the_round_trip(manifest: Manifest) -> None:
    """Karn's rule: split frames sent while the device's own probe (12 KB at 0.3 Mbit/s, 320 ms
    on the link) is unanswered wait behind it, so their round trips measure the probe; the
    prediction must not take them for the link's (it once rose past the SLA on them)."""
    clock = Clock()
    policy = AdaptivePolicy(manifest, SchedulerConfig(), sla_ms=400, fps=15, clock=clock)
    feed_link(policy, mbit=0.3)
    split = next(b for b in policy.branches if b.id == "split-w100")
    i = 0
    while True:  # the probe budget at 0.3 Mbit/s: one 12 KB frame every few seconds
        i += 1
        clock.now += 1 / 15
        choice = policy.choose(frame(i))
        if choice.probe:
            break
        assert choice.branch.id == "split-w100", "JPEG does not fit at 0.3 Mbit/s"
        policy.observe(edge_outcome(split, 320, 10.0, i))
        assert i < 1000, "no probe"
    probe_id, calm = i, policy.predict_ms(split)
    for i in range(probe_id + 1, probe_id + 5):  # sent behind the probe, answered before it
        clock.now += 1 / 15
        assert policy.choose(frame(i)).branch.id == "split-w100"
        policy.observe(edge_outcome(split, 320, 330.0 - 40 * (i - probe_id), i))
    assert policy.predict_ms(split) == pytest.approx(calm, abs=0.01)
    policy.observe(edge_outcome(JPEG, 12000, 10 + 12000 * 8 / 0.3e3, probe_id))
    # The probe is answered: the next slow round trip is the link's own, and counts.
    clock.now += 1 / 15
    policy.choose(frame(probe_id + 5))
    policy.observe(edge_outcome(split, 320, 290.0, probe_id + 5))
    assert policy.predict_ms(split) > calm + 100


def test_after_an_outage_on_local_probes_find_the_edge_again(manifest: Manifest) -> None:
    """An outage drives the policy to `local`, which sends nothing: without a remote frame the
    round trip and the edge's load are never measured again, so the policy must probe to learn
    that the link is back (the trace harness once stayed local for the rest of the clip)."""
    clock = Clock()
    policy = AdaptivePolicy(manifest, SchedulerConfig(), sla_ms=300, fps=15, clock=clock)
    feed_link(policy, mbit=10)
    for i in range(12):  # the outage: every remote frame misses its deadline
        clock.now += 1 / 15
        policy.observe(Outcome(i, "local", 0, reason="deadline_missed", branch="split-w100",
                               bytes_sent=320, timings_ms={"uplink": 600.0 + 50 * i}))
    assert not any(p.fits for p in policy.plans() if p.branch.kind != "local")
    choices = []
    for i in range(300):  # the link is back (10 ms, 10 Mbit/s): only a probe can tell
        clock.now += 1 / 15
        choice = policy.choose(frame(i))
        choices.append(choice)
        if choice.track:
            continue
        if choice.branch.kind == "local":
            policy.observe(Outcome(i, "local", 0, reason="policy", branch="local",
                                   timings_ms={"local": 70.0}))
            continue
        nbytes = 12000 if choice.branch.kind == "jpeg" else 320
        policy.observe(edge_outcome(choice.branch, nbytes, 10 + nbytes * 8 / 10e3))
        if not choice.probe:
            break
    assert choices[-1].branch.kind != "local" and not choices[-1].probe, "back on the edge"
    probes = [c for c in choices if c.probe]
    assert probes and probes[0].branch.kind == "split", "the cheapest probe first"
    # One fast answer after the stall restarts the round trip (LinkEstimator.
    # stale_after_timeouts): without it the EWMA took 16 probes, 122 frames, to forget the
    # stall (the trace harness sat on `local` for 5 s after the link came back).
    assert len(probes) == 1 and len(choices) < 30


def test_a_stall_round_trip_is_restarted_only_by_a_faster_reply() -> None:
    """The timeouts of a stall push the round trip up; after `stale_after_timeouts` of them in a
    row the first reply *shorter* than the estimate restarts it. A late reply from the stall,
    or a reply after only a timeout or two, is averaged in as before."""
    def stalled(timeouts: int) -> LinkEstimator:
        link = LinkEstimator(initial_mbit=10.0)
        for _ in range(20):
            link.observe_transfer(320, 40.0)
        for i in range(timeouts):
            link.observe_timeout(320, 800.0 + 100 * i)
        return link

    calm = stalled(0).estimate().rtt_ms
    link = stalled(6)
    assert link.estimate().rtt_ms > 800
    link.observe_transfer(320, 1500.0)  # a late reply from the stall: no restart
    assert link.estimate().rtt_ms > 800
    link.observe_transfer(320, 50.0)  # the link is back
    restarted = link.estimate()
    assert restarted.rtt_mean_ms == 50.0 and restarted.rtt_ms == pytest.approx(100.0)
    assert calm < restarted.rtt_ms < 2 * calm + 50
    link.observe_timeout(320, 900.0)  # the count starts over: one timeout is not a stall
    link.observe_transfer(320, 50.0)
    assert link.estimate().rtt_mean_ms > 100
    brief = stalled(2)  # two timeouts in a row: averaged, not restarted
    brief.observe_transfer(320, 50.0)
    assert brief.estimate().rtt_mean_ms > 200
    queued = stalled(6)  # a frame sent behind a probe says nothing of the link (Karn's rule)
    queued.observe_transfer(320, 50.0, queued=True)
    assert queued.estimate().rtt_ms > 800


def test_after_a_stall_the_round_trip_restarts_from_the_least_of_the_first_replies() -> None:
    """The first replies after a stall still wait on the queues it left: each of the first
    `recovery_replies` that is shorter than the estimate restarts it again, so the estimate
    starts from the least of them; later replies, or any after a new timeout, are averaged."""
    def stalled() -> LinkEstimator:
        link = LinkEstimator(initial_mbit=10.0)
        for _ in range(20):
            link.observe_transfer(320, 40.0)
        for i in range(6):
            link.observe_timeout(320, 800.0 + 100 * i)
        return link

    link = stalled()
    link.observe_transfer(320, 146.0)  # the first reply back, behind the stall's queue
    assert link.estimate().rtt_mean_ms == 146.0
    link.observe_transfer(320, 170.0)  # longer: averaged, and it uses up one reply
    assert link.estimate().rtt_mean_ms > 146.0
    link.observe_transfer(320, 45.0)  # the third reply: still within the window, restarts
    assert link.estimate().rtt_mean_ms == 45.0
    assert link.estimate().rtt_ms == pytest.approx(90.0)
    link.observe_transfer(320, 30.0)  # the window is over: averaged as any reply
    assert 30.0 < link.estimate().rtt_mean_ms < 45.0

    single = LinkEstimator(initial_mbit=10.0, recovery_replies=1)  # the old rule
    for _ in range(20):
        single.observe_transfer(320, 40.0)
    for i in range(6):
        single.observe_timeout(320, 800.0 + 100 * i)
    single.observe_transfer(320, 146.0)
    single.observe_transfer(320, 45.0)
    assert single.estimate().rtt_ms > 200  # mean + 2 deviations still near twice the first

    cut = stalled()
    cut.observe_transfer(320, 146.0)
    cut.observe_timeout(320, 900.0)  # not back after all: the window closes
    cut.observe_transfer(320, 45.0)
    assert cut.estimate().rtt_mean_ms > 100


def test_decisions_follow_the_estimates(manifest: Manifest) -> None:
    policy = AdaptivePolicy(manifest, SchedulerConfig(switch_up_after=1), sla_ms=300, fps=15)
    feed_link(policy, mbit=20)
    assert policy.choose(frame(0)).branch.id == "jpeg-q90"  # most accurate, fits
    feed_link(policy, mbit=0.3, frames=20)
    choice = policy.choose(frame(1))
    assert choice.branch.id == "split-w100" and choice.interval == 1  # JPEG no longer fits
    assert choice.predicted_ms is not None and choice.predicted_ms <= 300 / 1.3
    # A loaded edge: its queue makes every remote plan miss, so the device goes local and
    # samples (70 ms a detection cannot be kept up at 15 fps: k > 1).
    for _ in range(20):
        policy.observe(Outcome(2, "edge", 0, branch="split-w100", bytes_sent=320,
                               server=ServerTimings(400, 1, 8, 409, 1),
                               timings_ms={"uplink": 420.0, "head": 4.0}))
    choice = policy.choose(frame(2))
    assert choice.branch.id == "local"
    assert choice.interval > 1


def test_bytes_must_buy_accuracy(manifest: Manifest) -> None:
    """On a fast link a JPEG one point more accurate than the split, at 40× its bytes, is not
    worth them at the default byte price; ten points are; with bytes free, one point is."""

    def pick(jpeg_accuracy: float, **config: Any) -> str:
        jpeg = JPEG.model_copy(update={"accuracy": jpeg_accuracy})
        policy = AdaptivePolicy(manifest_with(manifest, SPLIT, jpeg, LOCAL),
                                SchedulerConfig(switch_up_after=1, **config), sla_ms=300, fps=15)
        feed_link(policy, mbit=20)
        return policy.choose(frame(0)).branch.id

    assert pick(0.44) == "split-w100"
    assert pick(0.54) == "jpeg-q90"
    assert pick(0.44, byte_price=0.0) == "jpeg-q90"


def test_a_slow_first_frame_does_not_make_every_plan_unsustainable(manifest: Manifest) -> None:
    """The warm-up's preprocess + prefilter time seeds the per-frame overhead: a first frame 35×
    slower (a cold cache, a spent CPU quota) is then one sample among others, where alone it
    would leave no plan sustainable at 15 fps: the fastest plan at the longest interval."""

    def first_choice(overhead_ms: float | None) -> tuple[str, int]:
        policy = AdaptivePolicy(manifest, SchedulerConfig(switch_up_after=1), sla_ms=300, fps=15)
        policy.calibrate({1.0: 4.0, 0.5: 3.0}, 70.0, overhead_ms)
        feed_link(policy, mbit=20)
        policy.observe(Outcome(0, "edge", 0, branch="split-w100", bytes_sent=320,
                               server=ServerTimings(0, 1, 8, 9, 1),
                               timings_ms={"preprocess": 1.0, "prefilter": 70.0, "uplink": 20.0,
                                           "head": 4.0}))
        choice = policy.choose(frame(1))
        return choice.branch.id, choice.interval

    assert first_choice(2.0) == ("jpeg-q90", 1)
    assert first_choice(None) == ("split-w050", 8)


def test_calibration_starts_image_branches_from_their_measured_encode(
        manifest: Manifest) -> None:
    """An image branch whose warm-up encode took 400 ms here is not planned at its profile's
    1 ms: nothing it sends could meet a 300 ms SLA."""

    def first_choice(image_ms: dict[str, float] | None) -> str:
        policy = AdaptivePolicy(manifest, SchedulerConfig(switch_up_after=1), sla_ms=300, fps=15)
        policy.calibrate({1.0: 4.0, 0.5: 3.0}, 70.0, 2.0, image_ms)
        feed_link(policy, mbit=20, frames=1)
        return policy.choose(frame(0)).branch.id

    assert first_choice(None) == "jpeg-q90"
    assert first_choice({"jpeg-q90": 400.0}) == "split-w100"


def test_stages_time_every_image_codec_warm(bundle_dir: Path) -> None:
    from device_client.stages import Stages

    bundle = load_bundle(bundle_dir)
    stages = Stages(manifest=bundle.manifest, head=HeadRunner(bundle, threads=1),
                    policy=FixedBranch.from_manifest(bundle.manifest, None),
                    metrics=DeviceMetrics(), config=PipelineConfig(),
                    edge=EdgeConfig(target="127.0.0.1:1"), stream_id="warm",
                    edge_available=lambda: True)
    image_branches = {b.id for b in bundle.manifest.branches if b.kind in ("jpeg", "webp")}
    measured = stages.warm_up_images(np.zeros((240, 320, 3), np.uint8))
    assert image_branches and set(measured) == image_branches
    assert all(ms > 0 for ms in measured.values())


def test_hysteresis_holds_a_plan_that_still_fits(manifest: Manifest) -> None:
    policy = AdaptivePolicy(manifest, SchedulerConfig(switch_up_after=5), sla_ms=300, fps=15)
    feed_link(policy, mbit=0.3)
    assert policy.choose(frame(0)).branch.id == "split-w100"
    feed_link(policy, mbit=20, frames=30)  # better now, but a better plan must win 5 times
    picked = [policy.choose(frame(i)).branch.id for i in range(1, 8)]
    assert picked[:4] == ["split-w100"] * 4
    assert picked[4:] == ["jpeg-q90"] * 3
    assert policy.switches == 1


# -- tracking -------------------------------------------------------------------------------------
def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def test_tracker_keeps_boxes_on_moving_shapes() -> None:
    generator = ShapesGenerator(GeneratedSource(kind="generated", seed=3, empty_run=0))
    tracker = BoxTracker()
    scores = []
    for start in (0, 10, 20):
        tracker.remember(start, generator.frame(start))
        truth = generator.boxes(start)
        detections = tuple(Detection(tuple(map(float, b)), 0.9, 1, "shape") for b in truth)
        assert tracker.seed(start, detections)
        for i in range(start + 1, start + 6):
            tracker.remember(i, generator.frame(i))
            tracked = tracker.track(i)
            assert tracked is not None
            for box in generator.boxes(i)[: len(truth)]:
                scores.append(max((iou(box, d.box) for d in tracked), default=0.0))
    assert np.mean(scores) > 0.6, scores
    # ...and without motion information it would be worse: the seed boxes left in place.
    still = [iou(generator.boxes(i)[0], generator.boxes(0)[0]) for i in range(1, 6)]
    assert np.mean(scores) > np.mean(still)


def test_tracker_refuses_stale_seeds() -> None:
    tracker = BoxTracker(keep_frames=4)
    image = np.zeros((60, 80, 3), np.uint8)
    for i in range(6):
        tracker.remember(i, image)
    assert not tracker.seed(0, ())  # forgotten frame
    assert tracker.seed(4, ())
    assert not tracker.seed(3, ())  # older than what was seeded


# -- end to end ------------------------------------------------------------------------------------
DEMO_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "demo-shapes"


@pytest.fixture(scope="module")
def demo_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    """The shipped bundle: its split latents are a few hundred bytes, its JPEGs ≈ 12 KB."""
    log = tmp_path_factory.mktemp("demo-edge") / "edge.log"
    server = EdgeProcess(DEMO_BUNDLE, free_port(), log).start()
    try:
        yield server
    finally:
        server.stop()


def test_link_drop_mid_clip_leaves_jpeg_for_plans_within_the_sla(demo_edge: EdgeProcess) -> None:
    """Real edge server on loopback, real heads and codecs, the simulated link dropping from
    10 to 0.3 Mbit/s mid-clip: the policy leaves the JPEG branch; once it settled, every frame
    is answered by a plan predicted to meet the SLA; every frame has exactly one outcome."""
    bundle = load_bundle(DEMO_BUNDLE)
    sla_ms = 400.0
    edge_config = EdgeConfig(target=f"127.0.0.1:{demo_edge.grpc_port}", sla_ms=sla_ms, window=4)
    link = SimulatedLink(GrpcUplink(edge_config, None), mbit=10, rtt_ms=10)
    # The two ends of the trade-off: JPEG (more accurate, 12 KB) and the widest split (300 B).
    # Bytes are free here: JPEG's two points must win on the fast link, to be left on the slow.
    scheduler = SchedulerConfig(branches=("split-w100", "jpeg-q90"), switch_up_after=4,
                                byte_price=0.0)
    policy = AdaptivePolicy(bundle.manifest, scheduler, sla_ms=sla_ms, fps=15)
    sink = ListSink()
    head, local = HeadRunner(bundle, threads=1), LocalRunner(bundle, threads=1)
    head.warm_up()
    local.warm_up()
    pipeline = Pipeline(
        manifest=bundle.manifest,
        head=head,
        local=local,
        uplink=link,
        policy=policy,
        sink=sink,
        metrics=DeviceMetrics(),
        config=PipelineConfig(policy="adaptive", prefilter={"enabled": False}),
        edge=edge_config,
        stream_id="e2e-adaptive",
        tracker=BoxTracker(),
    )
    # The link drops once the policy has settled on JPEG (10 of the last 12 frames), not at a
    # fixed frame: on a busy test machine a probe slowed by the CPU can keep it on the split
    # branch for seconds first. Never settling on JPEG at 10 Mbit/s by frame 140 fails below.
    frames, latest_drop = 240, 140
    source = GeneratedFrames(scene(frames=frames, fps=15, empty_run=0), pace=True)
    dropped_at: list[int] = []

    def on_frame() -> None:
        if dropped_at:
            return
        recent = sink.records[-12:]
        on_jpeg = sum(r["branch"] == "jpeg-q90" and not (r.get("decision") or {}).get("probe")
                      for r in recent)
        if on_jpeg >= 10 or len(sink.records) >= latest_drop:
            link.set_rate(0.3)
            dropped_at.append(len(sink.records))

    link.start()
    deadline = time.monotonic() + 10
    while not link.available and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        tally = pipeline.run(source, on_frame=on_frame)
    finally:
        link.close()
    records = sink.by_id()
    assert sorted(records) == list(range(frames)), "every frame exactly one outcome"
    assert tally.settled == frames

    def show(rs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(r["frame_id"], r["branch"], r["kind"], r["reason"], r["timings_ms"]["total"],
                 r.get("decision")) for r in rs]

    drop_at = dropped_at[0]
    assert drop_at < latest_drop, show([records[i] for i in range(drop_at)])
    after = [records[i] for i in range(drop_at + 30, frames)]
    assert all(r["branch"] != "jpeg-q90" or r["decision"]["probe"] for r in after), show(after)
    # Answered, and once the backlog JPEG left on the slow link has drained (its frames' queueing
    # is in the predictions), by plans the scheduler predicted to fit the SLA. What the frames
    # measured is the machine's business (tests assert no timings); benchmarks/scheduler.py
    # measures it.
    answered = [r for r in after if r["kind"] in ("edge", "local", "tracked")]
    assert len(answered) == len(after), show([r for r in after if r not in answered])
    drained = [r for r in after if r["frame_id"] >= drop_at + 60 and not r["decision"]["probe"]]
    assert drained and all(r["decision"]["predicted_ms"] <= sla_ms for r in drained), show(drained)
    assert all("decision" in r for r in records.values())


def test_daemon_runs_the_adaptive_policy_calibrated_on_this_device(
    demo_edge: EdgeProcess, daemons: Callable[..., DaemonProcess]
) -> None:
    """`splitedge device run` with the adaptive policy: its warm-up times the heads, the local
    model, the per-frame overhead and every image codec before the first frame, every frame
    has one outcome, and every decided frame says what the scheduler predicted."""
    frames = 24
    daemon = daemons({
        "device_id": "cam-adaptive",
        "bundle": {"path": str(DEMO_BUNDLE)},
        "source": scene(frames=frames, fps=15.0).model_dump(mode="json"),
        "edge": {"target": f"127.0.0.1:{demo_edge.grpc_port}", "sla_ms": 2000},
        "pipeline": {"policy": "adaptive"},
    }).start()
    assert daemon.wait_exit() == 0, daemon.log
    outcomes = daemon.outcomes()
    assert sorted(o["frame_id"] for o in outcomes) == list(range(frames))
    decided = [o for o in outcomes if o["kind"] in ("edge", "local", "tracked")]
    assert decided and all(o["decision"]["predicted_ms"] is not None for o in decided), outcomes
