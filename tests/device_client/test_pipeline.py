"""The pipeline against the in-memory uplink: real bundle, real ONNX sessions, real codecs; the
network is a function, so outages, late replies and lost streams are played exactly."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_client.config import EdgeConfig, PipelineConfig
from device_client.head import HeadRunner
from device_client.local import LocalRunner
from device_client.metrics import DeviceMetrics
from device_client.outcomes import Outcome
from device_client.pipeline import Pipeline
from device_client.policy import FixedBranch
from device_client.sources import Frame, GeneratedFrames, ShapesGenerator
from device_client.uplink import InMemoryUplink
from shared.bundle import Bundle, load_bundle
from shared.codecs import CodecId, ImageCodec
from shared.errors import Overloaded
from shared.wire import pb
from tests.device_client.bundle_factory import scene
from tests.device_client.conftest import wait_for


class ListSink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.records.append(record)

    def close(self) -> None:
        pass

    def by_id(self) -> dict[int, dict[str, Any]]:
        ids = Counter(r["frame_id"] for r in self.records)
        assert all(n == 1 for n in ids.values()), f"more than one outcome: {ids}"
        return {r["frame_id"]: r for r in self.records}


class RecordingPolicy(FixedBranch):
    def __init__(self, branch: Any) -> None:
        super().__init__(branch)
        self.seen: list[Outcome] = []

    def observe(self, outcome: Outcome) -> None:
        self.seen.append(outcome)


def answer_ok(request: pb.InferRequest) -> pb.InferResponse:
    reply = pb.InferResponse(
        stream_id=request.stream_id,
        frame_id=request.frame_id,
        branch_id=request.branch_id,
        status=pb.FrameStatus(code=pb.FRAME_OK),
        timings=pb.StageTimings(queue_wait_ms=1, decode_ms=2, tail_ms=3, total_ms=6, batch_size=1),
    )
    reply.detections.add(
        box=pb.Box(x_min=1, y_min=2, x_max=3, y_max=4), score=0.9, label_id=1, label="class1"
    )
    return reply


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


@pytest.fixture(scope="module")
def runners(bundle: Bundle) -> tuple[HeadRunner, LocalRunner]:
    return HeadRunner(bundle, threads=1), LocalRunner(bundle, threads=1)


class Rig:
    def __init__(
        self,
        bundle: Bundle,
        runners: tuple[HeadRunner, LocalRunner],
        uplink: InMemoryUplink,
        branch: str | None = None,
        sla_ms: float = 10_000,
        window: int = 4,
        **pipeline: Any,
    ) -> None:
        pipeline.setdefault("prefilter", {"enabled": False})
        self.uplink = uplink
        self.sink = ListSink()
        self.policy = RecordingPolicy(FixedBranch.from_manifest(bundle.manifest, branch).branch)
        self.pipeline = Pipeline(
            manifest=bundle.manifest,
            head=runners[0],
            local=runners[1],
            uplink=uplink,
            policy=self.policy,
            sink=self.sink,
            metrics=DeviceMetrics(),
            config=PipelineConfig(**pipeline),
            edge=EdgeConfig(sla_ms=sla_ms, window=window),
            stream_id="unit",
        )

    def run(self, frames: int) -> dict[int, dict[str, Any]]:
        tally = self.pipeline.run(GeneratedFrames(scene(frames=frames), pace=False))
        assert tally.seen == tally.settled == frames
        return self.sink.by_id()

    def run_in_thread(self, frames: int) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(frames,), daemon=True)
        thread.start()
        return thread


def test_every_frame_reaches_the_edge_with_a_well_formed_request(
    bundle: Bundle, runners: tuple[HeadRunner, LocalRunner]
) -> None:
    rig = Rig(bundle, runners, InMemoryUplink(answer_ok), sla_ms=750)
    outcomes = rig.run(6)
    assert [outcomes[i]["kind"] for i in range(6)] == ["edge"] * 6
    assert outcomes[0]["detections"][0]["label"] == "class1"
    assert outcomes[0]["server_ms"]["tail"] == 3
    generator = ShapesGenerator(scene())
    for request in rig.uplink.sent:
        assert request.model_name == "tiny" and request.model_version == "1"
        assert request.branch_id == "split-w100"
        assert request.latent.codec == CodecId.FACTORIZED_ANS
        assert request.latent.shape[0] == bundle.manifest.head_for(1.0).latent_channels
        assert (request.original_size.width, request.original_size.height) == (320, 240)
        expected = runners[0].preprocess(generator.frame(request.frame_id)).geometry.input_size
        assert (request.input_size.height, request.input_size.width) == expected
        assert request.deadline_unix_ns - request.capture_time_unix_ns == 750_000_000
    assert len(rig.policy.seen) == 6  # the policy hears every outcome


def test_prefilter_skips_empty_frames_and_sends_the_others(
    bundle: Bundle, runners: tuple[HeadRunner, LocalRunner]
) -> None:
    rig = Rig(bundle, runners, InMemoryUplink(answer_ok), prefilter={"enabled": True})
    outcomes = rig.run(20)
    generator = ShapesGenerator(scene())
    empty = [i for i in range(20) if not generator.has_objects(i)]
    assert [i for i in range(20) if outcomes[i]["kind"] == "prefiltered"] == empty
    assert sorted(r.frame_id for r in rig.uplink.sent) == sorted(set(range(20)) - set(empty))
    assert rig.pipeline.tally.outcomes["prefiltered"] == len(empty)


def test_head_score_mode_also_skips_but_only_after_the_head(
    bundle: Bundle, runners: tuple[HeadRunner, LocalRunner]
) -> None:
    rig = Rig(
        bundle, runners, InMemoryUplink(answer_ok), prefilter={"enabled": True, "gate": False}
    )
    outcomes = rig.run(10)
    skipped = [o for o in outcomes.values() if o["kind"] == "prefiltered"]
    assert skipped and all("head" in o["timings_ms"] for o in skipped)


@pytest.mark.parametrize(("action", "kind"), [("fallback", "local"), ("drop", "dropped")])
def test_unreachable_edge_falls_back_or_drops_as_configured(
    bundle: Bundle, runners: tuple[HeadRunner, LocalRunner], action: str, kind: str
) -> None:
    uplink = InMemoryUplink(answer_ok)
    uplink.available = False
    rig = Rig(bundle, runners, uplink, on_edge_failure=action)
    outcomes = rig.run(4)
    assert {(o["kind"], o["reason"]) for o in outcomes.values()} == {(kind, "edge_unavailable")}
    if kind == "local":
        assert all(o["detections"] and "local" in o["timings_ms"] for o in outcomes.values())


def test_a_late_reply_misses_its_deadline_once_and_is_then_ignored(
    bundle: Bundle, runners: tuple[HeadRunner, LocalRunner]
) -> None:
    uplink = InMemoryUplink(answer_ok)
    uplink.hold()
    rig = Rig(bundle, runners, uplink, sla_ms=100)
    outcomes = rig.run(3)
    assert {(o["kind"], o["reason"]) for o in outcomes.values()} == {("local", "deadline_missed")}
    uplink.release()  # the replies arrive after all
    assert rig.pipeline.tally.late_replies == 3
    assert len(rig.sink.records) == 3


def test_deadline_miss_can_drop_while_outages_fall_back(
    bundle: Bundle, runners: tuple[HeadRunner, LocalRunner]
) -> None:
    uplink = InMemoryUplink(answer_ok)
    uplink.hold()
    rig = Rig(bundle, runners, uplink, sla_ms=100, on_deadline_miss="drop")
    outcomes = rig.run(2)
    assert {(o["kind"], o["reason"]) for o in outcomes.values()} == {("dropped", "deadline_missed")}


def test_a_lost_stream_fails_every_frame_in_flight_over_to_local(
    bundle: Bundle, runners: tuple[HeadRunner, LocalRunner]
) -> None:
    uplink = InMemoryUplink(answer_ok)
    uplink.hold()
    rig = Rig(bundle, runners, uplink, window=3)
    thread = rig.run_in_thread(3)
    wait_for(lambda: len(uplink.sent) == 3, 30, "three frames in flight")
    uplink.lose_stream()
    thread.join(timeout=30)
    outcomes = rig.sink.by_id()
    assert {(o["kind"], o["reason"]) for o in outcomes.values()} == {("local", "edge_unavailable")}
    assert all(o["bytes_sent"] > 0 for o in outcomes.values())  # they did leave the device


def test_the_window_bounds_frames_in_flight(
    bundle: Bundle, runners: tuple[HeadRunner, LocalRunner]
) -> None:
    uplink = InMemoryUplink(answer_ok)
    uplink.hold()
    rig = Rig(bundle, runners, uplink, window=2)
    thread = rig.run_in_thread(5)
    wait_for(lambda: len(uplink.sent) == 2, 30, "the window to fill")
    time.sleep(0.3)  # give a wrong pipeline the chance to send a third
    assert len(uplink.sent) == 2
    uplink.release()
    thread.join(timeout=30)
    assert [o["kind"] for o in rig.sink.by_id().values()] == ["edge"] * 5


def test_an_error_reply_is_a_failure_with_its_code(
    bundle: Bundle, runners: tuple[HeadRunner, LocalRunner]
) -> None:
    def overloaded(request: pb.InferRequest) -> pb.InferResponse:
        return pb.InferResponse(
            frame_id=request.frame_id,
            status=pb.FrameStatus(code=pb.FRAME_RESOURCE_EXHAUSTED, retry_after_ms=50),
        )

    rig = Rig(bundle, runners, InMemoryUplink(overloaded))
    outcomes = rig.run(2)
    assert {o["reason"] for o in outcomes.values()} == {"edge_error:resource_exhausted"}
    assert {o["kind"] for o in outcomes.values()} == {"local"}
    # The device gets the typed error back, not only its name.
    errors = [o.error for o in rig.policy.seen]
    assert all(isinstance(e, Overloaded) and e.retry_after_ms == 50 for e in errors), errors
    assert {o["error"]["type"] for o in outcomes.values()} == {"Overloaded"}


def test_policy_branches_local_jpeg_and_skip(
    bundle: Bundle, runners: tuple[HeadRunner, LocalRunner]
) -> None:
    local = Rig(bundle, runners, InMemoryUplink(answer_ok), branch="local")
    assert {(o["kind"], o["reason"]) for o in local.run(2).values()} == {("local", "policy")}
    assert not local.uplink.sent

    jpeg = Rig(bundle, runners, InMemoryUplink(answer_ok), branch="jpeg-q90")
    assert {o["kind"] for o in jpeg.run(2).values()} == {"edge"}
    assert all(r.image.codec == CodecId.JPEG and r.image.data for r in jpeg.uplink.sent)

    skip = Rig(bundle, runners, InMemoryUplink(answer_ok), branch="skip")
    assert {o["reason"] for o in skip.run(2).values()} == {"policy_skip"}


def test_an_image_branch_encodes_at_its_own_quality(
    bundle: Bundle, runners: tuple[HeadRunner, LocalRunner]
) -> None:
    """The quality is a field of the branch (jpeg-q30 ... webp-q90), not a constant in code."""
    qualities = {b.id: b.quality for b in bundle.manifest.branches if b.kind in ("jpeg", "webp")}
    assert qualities["jpeg-q30"] == 30 and qualities["webp-q90"] == 90
    sent = {}
    for branch in ("jpeg-q30", "jpeg-q90", "webp-q30"):
        rig = Rig(bundle, runners, InMemoryUplink(answer_ok), branch=branch)
        rig.run(2)
        sent[branch] = [r.image for r in rig.uplink.sent]
    frame = GeneratedFrames(scene(frames=1), pace=False).generator.frame(0)
    expected = ImageCodec(CodecId.JPEG, 30).encode(frame).strings[0]
    assert sent["jpeg-q30"][0].data == expected  # byte for byte what quality 30 writes
    assert len(sent["jpeg-q30"][0].data) < len(sent["jpeg-q90"][0].data)
    assert sent["webp-q30"][0].codec == CodecId.WEBP


def test_a_frame_that_breaks_the_head_is_dropped_and_the_stream_goes_on(
    bundle: Bundle, runners: tuple[HeadRunner, LocalRunner]
) -> None:
    rig = Rig(bundle, runners, InMemoryUplink(answer_ok))
    not_rgb = np.zeros((10, 10), dtype=np.uint8)  # not HxWx3: the preprocessor refuses it
    rig.pipeline.process(Frame(0, not_rgb, time.time_ns(), time.monotonic()))
    busy = ShapesGenerator(scene()).frame(1)
    rig.pipeline.process(Frame(1, busy, time.time_ns(), time.monotonic()))
    kinds = {r["frame_id"]: (r["kind"], r["reason"]) for r in rig.sink.records}
    assert kinds == {0: ("dropped", "failed"), 1: ("edge", None)}


def test_the_local_runner_returns_named_top_k_results(
    bundle: Bundle, runners: tuple[HeadRunner, LocalRunner]
) -> None:
    local = runners[1]
    image = ShapesGenerator(scene()).frame(1)
    results = local.run(image, ("detection", "classification"))
    names = bundle.manifest.classes
    found = local.detect(image)
    assert len(results.detections) == len(found.scores)
    assert all(d.label == names["detection"][d.label_id] for d in results.detections)
    if "classification" in local.sessions:
        probabilities = [c.score for c in results.classifications]
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < len(probabilities) <= 5 and all(0 <= p <= 1 for p in probabilities)
    assert local.run(image, ()).detections == ()


def test_the_head_runner_prepares_then_encodes_with_stage_timings(
    runners: tuple[HeadRunner, LocalRunner]
) -> None:
    head = runners[0]
    image = ShapesGenerator(scene()).frame(1)
    prepared = head.prepare(image, gate=True)
    assert prepared.gate_score is not None and set(prepared.timings_ms) == {
        "preprocess", "prefilter"
    }
    out = head.encode(prepared, min(head.widths))
    assert out.payload is not None and head.width == min(head.widths)
    assert set(out.timings_ms) == {"preprocess", "prefilter", "head", "encode"}
    assert out.prefilter_score == prepared.gate_score
    ungated = head.prepare(image)
    skipped = head.encode(ungated, threshold=2.0)  # no score reaches 2: nothing is encoded
    assert skipped.payload is None and "encode" not in skipped.timings_ms
