"""The one translation layer: every wire <-> domain map round-trips, and is tied to the proto."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from shared import errors
from shared.codecs import CODECS, IMAGE_CODECS, MEDIA_TYPES, CodecError, CodecId, codec_spec
from shared.messages import (
    TASK_IDS,
    FrameRequest,
    LeanDecoder,
    LeanEncoder,
    error_of,
    fill_results,
    grpc_code,
    infer_request,
    results_of,
    status_of,
    tasks_from_wire,
    timings_message,
    timings_of,
    wire_bytes,
)
from shared.results import Classification, Detection, Results, ServerTimings, top_k_classes
from shared.wire import pb


def test_task_map_is_the_wire_enum() -> None:
    wire = {v.name.removeprefix("TASK_").lower(): v.number for v in pb.Task.DESCRIPTOR.values}
    assert {name: wire[name] for name in TASK_IDS} == TASK_IDS
    assert tasks_from_wire([], ("detection",), "m") == ("detection",)
    both = [pb.TASK_CLASSIFICATION, pb.TASK_DETECTION, pb.TASK_DETECTION]
    assert tasks_from_wire(both, ("detection", "classification"), "m") == (
        "classification", "detection"
    )
    with pytest.raises(errors.InvalidRequest, match="serves tasks"):
        tasks_from_wire([pb.TASK_CLASSIFICATION], ("detection",), "m")


def test_code_names_are_the_wire_frame_codes() -> None:
    wire = {v.number: v.name.removeprefix("FRAME_").lower() for v in pb.FrameCode.DESCRIPTOR.values}
    assert wire == errors.CODE_NAMES


@pytest.mark.parametrize(
    "error",
    [
        errors.InvalidRequest("bad shape"),
        errors.UnknownModel("no model x"),
        errors.DeadlineMissed("late"),
        errors.Overloaded("queue full", retry_after_ms=40),
        errors.Unauthenticated("no token"),
        errors.NotReady("loading"),
        errors.FrameError("internal"),
    ],
)
def test_a_typed_error_crosses_the_wire_and_comes_back_typed(error: errors.FrameError) -> None:
    status = pb.FrameStatus.FromString(status_of(error).SerializeToString())
    back = error_of(status)
    assert type(back) is type(error) and str(back) == str(error) and back.code == error.code
    if isinstance(error, errors.Overloaded):
        assert isinstance(back, errors.Overloaded) and back.retry_after_ms == 40
    assert grpc_code(error).value[0] == error.code
    assert error_of(pb.FrameStatus(code=pb.FRAME_OK)) is None


def test_shutting_down_comes_back_as_unavailable() -> None:
    back = error_of(status_of(errors.ShuttingDown("draining")))
    assert isinstance(back, errors.NotReady) and back.code_name == "unavailable"
    assert grpc_code(errors.ShuttingDown("x")) is grpc.StatusCode.UNAVAILABLE


def test_results_and_timings_round_trip() -> None:
    results = Results(
        (Detection((1.0, 2.0, 3.0, 4.0), 0.5, 2, "circle"),),
        (Classification(3, 0.75, "square"), Classification(1, 0.25, "")),
    )
    response = pb.InferResponse()
    fill_results(response, results)
    assert results_of(pb.InferResponse.FromString(response.SerializeToString())) == results
    timings = ServerTimings(1.5, 2.0, 3.25, 7.0, 4)
    response.timings.CopyFrom(timings_message(timings))
    assert timings_of(response) == timings


def test_labels_come_from_the_manifest_classes() -> None:
    named = Results((Detection((0, 0, 1, 1), 0.9, 1),), (Classification(7, 0.9),)).labelled(
        {"detection": ("__background__", "circle"), "classification": ("a", "b")}
    )
    assert named.detections[0].label == "circle"
    assert named.classifications[0].label == ""  # id 7 is beyond the names: no label, no crash


def test_top_k_is_a_sorted_softmax() -> None:
    top = top_k_classes(np.array([0.0, 3.0, 1.0, 2.0]), k=3)
    assert [c.label_id for c in top] == [1, 3, 2]
    assert sum(c.score for c in top_k_classes(np.zeros(4), k=4)) == pytest.approx(1.0)


def test_requests_are_built_one_way() -> None:
    latent = codec_spec("UINT8_ZSTD").make().encode(np.zeros((2, 3, 4), np.float32))
    about = FrameRequest("tiny", "1", "split-w100", ("detection",), "cam", 9, 10, 20, (240, 320))
    request = infer_request(about, latent=latent, input_size=(64, 96))
    assert (request.model_name, request.branch_id, request.frame_id) == ("tiny", "split-w100", 9)
    assert list(request.tasks) == [pb.TASK_DETECTION]
    assert request.latent.codec == CodecId.UINT8_ZSTD and list(request.latent.shape) == [2, 3, 4]
    assert (request.original_size.height, request.input_size.width) == (240, 96)
    image = codec_spec("JPEG").make().encode(np.zeros((8, 8, 3), np.uint8))
    assert infer_request(about, image=image).image.codec == CodecId.JPEG
    with pytest.raises(ValueError, match="exactly one"):
        infer_request(about)


def test_the_codec_registry_covers_every_wire_id() -> None:
    assert set(CODECS) == set(CodecId)
    assert {codec_spec(c.name).id for c in CodecId} == set(CodecId)
    assert codec_spec("CODEC_WEBP").id is CodecId.WEBP
    assert {CODECS[c].image_format for c in IMAGE_CODECS} == {"JPEG", "WEBP", "PNG"}
    assert MEDIA_TYPES["image/png"] is CodecId.PNG
    with pytest.raises(CodecError, match="unknown codec name"):
        codec_spec("GIF")


def _frame(frame_id: int, branch: str = "split-w100", **changes: object) -> pb.InferRequest:
    about = FrameRequest("tiny", "1", branch, ("detection",), "cam", frame_id,
                         capture_time_ns=1000 + frame_id, original_size=(240, 320))
    latent = codec_spec("UINT8_ZSTD").make().encode(np.full((2, 3, 4), frame_id, np.float32))
    request = infer_request(about, latent=latent, input_size=(64, 96))
    for name, value in changes.items():
        setattr(request, name, value)
    return request


def test_lean_frames_leave_out_what_did_not_change_and_expand_back() -> None:
    frames = [_frame(0), _frame(1), _frame(2, branch="split-w050"), _frame(3, branch="split-w050")]
    jpeg = infer_request(FrameRequest("tiny", "1", "jpeg-q90", ("detection",), "cam", 4,
                                      original_size=(240, 320)),
                         image=codec_spec("JPEG").make().encode(np.zeros((8, 8, 3), np.uint8)))
    frames += [jpeg, _frame(5), _frame(6, model_version="")]  # back to "newest": sent whole
    encoder, decoder = LeanEncoder(), LeanDecoder()
    sent = [encoder.encode(f) for f in frames]
    assert [s.lean for s in sent] == [False, True, True, True, False, True, False]
    assert wire_bytes(sent[1]) < wire_bytes(frames[1]) - 30  # names, tasks and sizes left out
    assert not sent[1].model_name and not sent[1].HasField("original_size")
    assert sent[2].branch_id == "split-w050" and not sent[2].stream_id
    for whole, lean in zip(frames, sent, strict=True):
        wire = pb.InferRequest.FromString(lean.SerializeToString())
        assert decoder.expand(wire) == whole
    assert wire_bytes(frames[0]) == frames[0].ByteSize() + 5 + 9  # gRPC's and HTTP/2's framing


def test_a_lean_frame_needs_a_frame_before_it() -> None:
    lean = LeanEncoder()
    lean.encode(_frame(0))
    orphan = lean.encode(_frame(1))
    with pytest.raises(errors.InvalidRequest, match="earlier frame"):
        LeanDecoder().expand(orphan)
