"""Inference over real gRPC on loopback: unary and streaming agree with in-process tails; streams
are answered exactly once, in order; batching batches; bad frames are answered in-band."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.codecs import CodecId
from shared.messages import (
    COMPACT_HEADER,
    LEAN_HEADER,
    FrameRequest,
    LeanEncoder,
    infer_request,
    latent_payload,
)
from shared.wire import pb, pb_grpc
from split_models.runtime import TailRuntime
from tests.edge_server.client import MODEL, FrameEncoder, assert_same_detections, detections
from tests.edge_server.conftest import a_frame

SIZES = [(240, 320), (300, 200), (180, 400)]


@pytest.fixture(scope="module")
def encoder(bundle_dir) -> FrameEncoder:
    return FrameEncoder(bundle_dir)


@pytest.fixture(scope="module")
def reference(bundle_dir) -> TailRuntime:
    return TailRuntime.load(bundle_dir)


def stub(edge) -> pb_grpc.SplitInferenceStub:
    return pb_grpc.SplitInferenceStub(grpc.insecure_channel(edge.grpc_target))


def expected(reference: TailRuntime, request: pb.InferRequest):
    """The in-process answer to the same bytes: decode with the bundle's codec, run the tail."""
    from shared.codecs import FactorizedAnsCodec, FactorizedTables

    tables = FactorizedTables.load(reference.bundle.path(reference.bundle.manifest.entropy_file))
    latent = FactorizedAnsCodec(tables).decode(latent_payload(request.latent))
    size = (request.input_size.height, request.input_size.width)
    original = (request.original_size.height, request.original_size.width)
    return reference.run_latents([latent], [size], [original])[0]


def assert_same(response: pb.InferResponse, result) -> None:
    assert response.status.code == pb.FRAME_OK, response.status.message
    theirs = [(*d.box, d.score, d.label_id) for d in result.detections]
    assert_same_detections(detections(response), theirs)
    got = [(c.label_id, c.score) for c in response.classifications]
    want = [(c.label_id, c.score) for c in result.classifications]
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], atol=1e-5)


def test_unary_matches_in_process_tails_at_every_width_and_size(edge, encoder, reference) -> None:
    client = stub(edge)
    for i, (height, width) in enumerate(SIZES):
        for w in (0.25, 1.0):
            request = encoder.request(a_frame(height, width, seed=i), frame_id=i, width=w)
            response = client.Infer(request, timeout=30)
            assert (response.frame_id, response.branch_id) == (i, request.branch_id)
            assert response.model_version == "1"
            assert response.detections, "the tiny detector with spread scores finds boxes"
            assert response.classifications
            assert_same(response, expected(reference, request))
            assert response.timings.total_ms >= response.timings.tail_ms > 0
            assert response.timings.batch_size >= 1


def test_detection_boxes_are_in_original_pixels(edge, encoder) -> None:
    response = stub(edge).Infer(encoder.request(a_frame(300, 200)), timeout=30)
    for d in response.detections:
        assert 0 <= d.box.x_min <= d.box.x_max <= 200 and 0 <= d.box.y_min <= d.box.y_max <= 300


def test_stream_answers_every_frame_in_order_like_unary(edge, encoder) -> None:
    # One frame size: frames of a stream batch together, and padding to a common size would
    # (as in torchvision) move border features; equal sizes make batched == unbatched.
    client = stub(edge)
    requests = [encoder.request(a_frame(seed=i), frame_id=i) for i in range(9)]
    unary = [client.Infer(r, timeout=30) for r in requests]
    streamed = list(client.Stream(iter(requests), timeout=60))
    assert [r.frame_id for r in streamed] == list(range(9))
    for a, b in zip(unary, streamed, strict=True):
        assert_same_detections(detections(a), detections(b))


def test_lean_stream_frames_get_the_answers_of_whole_frames(edge, encoder) -> None:
    """The edge announces lean frames, expands each against the one before, and answers as for
    the whole frame; a lean frame with nothing before it is refused in-band, by its frame id."""
    client = stub(edge)
    widths = [1.0, 1.0, 0.25, 0.25, 1.0]  # a branch switch mid-stream stays lean
    whole = [encoder.request(a_frame(seed=i), frame_id=i, width=w) for i, w in enumerate(widths)]
    lean = LeanEncoder()
    sent = [lean.encode(r) for r in whole]
    assert [r.lean for r in sent] == [False, True, True, True, True]
    call = client.Stream(iter(sent), timeout=60)
    assert LEAN_HEADER in [(m.key, m.value) for m in call.initial_metadata()]
    streamed = list(call)
    unary = [client.Infer(r, timeout=30) for r in whole]
    for a, b in zip(unary, streamed, strict=True):
        assert b.status.code == pb.FRAME_OK, b.status.message
        assert (b.frame_id, b.branch_id, b.stream_id) == (a.frame_id, a.branch_id, a.stream_id)
        assert_same_detections(detections(a), detections(b))
    (orphan,) = client.Stream(iter([sent[1]]), timeout=30)
    assert orphan.status.code == pb.FRAME_INVALID_ARGUMENT and orphan.frame_id == 1
    assert "earlier frame" in orphan.status.message
    with pytest.raises(grpc.RpcError) as refused:
        client.Infer(sent[1], timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_compact_stream_frames_get_the_answers_of_whole_frames(edge, encoder) -> None:
    """The edge announces compact frames too; frames without the latent's codec and shape and
    with their times as offsets get the whole frames' answers, deadlines included."""
    client = stub(edge)
    start = time.time_ns() - 10_000_000_000  # captured 10 s ago, at 15 fps
    whole = [encoder.request(a_frame(seed=i), frame_id=i, width=w)
             for i, w in enumerate([1.0, 1.0, 0.25, 0.25])]
    for i, request in enumerate(whole):
        request.capture_time_unix_ns = start + i * 66_666_667
        request.deadline_unix_ns = request.capture_time_unix_ns + 60_000_000_000
    whole[3].deadline_unix_ns = whole[3].capture_time_unix_ns + 1_000_000  # 1 ms: long past
    compact = LeanEncoder(compact=True)
    sent = [compact.encode(r) for r in whole]
    assert all(s.HasField("capture_after_previous_us") for s in sent[1:])
    assert sent[3].deadline_after_capture_us == 1000
    assert not sent[1].latent.shape and not sent[3].latent.shape  # the same width as before
    call = client.Stream(iter(sent), timeout=60)
    assert COMPACT_HEADER in [(m.key, m.value) for m in call.initial_metadata()]
    streamed = list(call)
    for request, answer in zip(whole[:3], streamed, strict=False):
        assert answer.status.code == pb.FRAME_OK, answer.status.message
        assert_same_detections(detections(client.Infer(request, timeout=30)), detections(answer))
    assert streamed[3].status.code == pb.FRAME_DEADLINE_EXCEEDED, streamed[3].status.message


def test_concurrent_streams_each_get_every_frame_once_in_order_and_batches_form(
    batching_edge, encoder
) -> None:
    edge = batching_edge
    streams, frames = 8, 6
    requests = {
        s: [
            encoder.request(a_frame(seed=s), frame_id=f, stream_id=f"cam{s}") for f in range(frames)
        ]
        for s in range(streams)
    }
    answers: dict[int, list[pb.InferResponse]] = {}

    def run(s: int) -> None:
        answers[s] = list(stub(edge).Stream(iter(requests[s]), timeout=120))

    threads = [threading.Thread(target=run, args=(s,)) for s in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in range(streams):
        assert [(r.stream_id, r.frame_id) for r in answers[s]] == [
            (f"cam{s}", f) for f in range(frames)
        ]
        assert all(r.status.code == pb.FRAME_OK for r in answers[s])
    batch_sizes = [r.timings.batch_size for rs in answers.values() for r in rs]
    assert max(batch_sizes) > 1
    histogram = edge.runtime_metric("splitedge_batch_size_bucket", le="1.0")
    total = edge.runtime_metric("splitedge_batch_size_count")
    assert total > histogram  # some batches held more than one frame


def test_bad_frames_are_answered_in_band_and_the_stream_goes_on(edge, encoder) -> None:
    good = encoder.request(a_frame(), frame_id=0)
    wrong_codec = pb.InferRequest()
    wrong_codec.CopyFrom(good)
    wrong_codec.frame_id, wrong_codec.latent.codec = 1, pb.CODEC_UINT8_ZSTD
    garbage = pb.InferRequest()
    garbage.CopyFrom(good)
    garbage.frame_id = 2
    garbage.latent.strings[0] = b"\x01\x02\x03\x04" * 5
    wrong_shape = pb.InferRequest()
    wrong_shape.CopyFrom(good)
    wrong_shape.frame_id = 3
    wrong_shape.latent.shape[0] = 5
    unknown_branch = pb.InferRequest()
    unknown_branch.CopyFrom(good)
    unknown_branch.frame_id, unknown_branch.branch_id = 4, "split-w999"
    unknown_model = pb.InferRequest(frame_id=5, model_name="nope", latent=good.latent)
    last = pb.InferRequest()
    last.CopyFrom(good)
    last.frame_id = 6
    sent = [good, wrong_codec, garbage, wrong_shape, unknown_branch, unknown_model, last]
    answers = list(stub(edge).Stream(iter(sent), timeout=60))
    codes = [a.status.code for a in answers]
    assert [a.frame_id for a in answers] == list(range(7))
    assert codes == [
        pb.FRAME_OK,
        pb.FRAME_INVALID_ARGUMENT,
        pb.FRAME_INVALID_ARGUMENT,
        pb.FRAME_INVALID_ARGUMENT,
        pb.FRAME_NOT_FOUND,
        pb.FRAME_NOT_FOUND,
        pb.FRAME_OK,
    ]
    assert "split-w025" in answers[4].status.message  # NOT_FOUND lists what exists
    assert "demo-shapes" in answers[5].status.message


def test_unary_errors_are_grpc_statuses(edge, encoder) -> None:
    client = stub(edge)
    request = encoder.request(a_frame())
    request.model_name = "missing"
    with pytest.raises(grpc.RpcError) as err:
        client.Infer(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        client.Infer(pb.InferRequest(model_name=MODEL, branch_id="split-w100"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_expired_deadline_is_answered_and_not_computed(edge, encoder) -> None:
    computed = edge.runtime_metric("splitedge_frames_computed_total")
    request = encoder.request(a_frame(), frame_id=1, deadline_unix_ns=1)  # long past
    answers = list(stub(edge).Stream(iter([request]), timeout=30))
    assert answers[0].status.code == pb.FRAME_DEADLINE_EXCEEDED
    assert edge.runtime_metric("splitedge_frames_computed_total") == computed
    assert edge.runtime_metric("splitedge_requests_total", status="deadline_exceeded") >= 1


def test_list_models_health_and_reflection(edge) -> None:
    channel = grpc.insecure_channel(edge.grpc_target)
    models = pb_grpc.SplitInferenceStub(channel).ListModels(pb.ListModelsRequest(), timeout=10)
    (model,) = models.models
    assert model.name == MODEL and model.version == "1"
    branch_ids = [b.id for b in model.branches]
    assert {"split-w025", "split-w100", "jpeg-q90", "local", "skip"} <= set(branch_ids)
    split = next(b for b in model.branches if b.id == "split-w050")
    assert split.codec == pb.CODEC_FACTORIZED_ANS and split.expected_bytes > 0
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "splitedge.v1.SplitInference"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    reply = next(
        reflect.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
    )
    names = {s.name for s in reply.list_services_response.service}
    assert "splitedge.v1.SplitInference" in names and "grpc.health.v1.Health" in names


def test_full_frame_over_grpc_runs_the_teacher(edge, reference) -> None:
    from shared.codecs import make_codec

    frame = a_frame(240, 320)
    payload = make_codec(CodecId.JPEG, quality=90).encode(frame)
    request = infer_request(FrameRequest(MODEL, branch_id="jpeg-q90"), image=payload)
    response = stub(edge).Infer(request, timeout=30)
    decoded = make_codec(CodecId.JPEG).decode(payload)
    (result,) = reference.run_images([decoded])
    assert_same(response, result)


def test_async_client_many_unary_calls(batching_edge, encoder) -> None:
    edge = batching_edge
    requests = [encoder.request(a_frame(seed=i), frame_id=i) for i in range(12)]

    async def main() -> list[pb.InferResponse]:
        async with grpc.aio.insecure_channel(edge.grpc_target) as channel:
            client = pb_grpc.SplitInferenceStub(channel)
            return await asyncio.gather(*(client.Infer(r, timeout=60) for r in requests))

    answers = asyncio.run(main())
    assert [a.frame_id for a in answers] == list(range(12))


def test_several_versions_side_by_side(bundle_dir, tmp_path, encoder) -> None:
    import shutil

    from shared.bundle import load_bundle, write_manifest
    from tests.edge_server.conftest import edge_settings, start_edge

    newer = tmp_path / "demo-shapes-v2"
    shutil.copytree(bundle_dir, newer)
    manifest = load_bundle(newer).manifest
    write_manifest(newer, manifest.model_copy(update={"version": "2"}))
    running = start_edge(edge_settings([bundle_dir, newer], warmup=False))
    try:
        client = stub(running)
        listed = client.ListModels(pb.ListModelsRequest(), timeout=10).models
        assert sorted(m.version for m in listed) == ["1", "2"]
        request = encoder.request(a_frame())
        assert client.Infer(request, timeout=30).model_version == "2"  # newest by default
        request.model_version = "1"
        assert client.Infer(request, timeout=30).model_version == "1"
        request.model_version = "3"
        with pytest.raises(grpc.RpcError) as err:
            client.Infer(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "1, 2" in err.value.details()
    finally:
        running.stop()
