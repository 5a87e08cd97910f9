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
    check_whole,
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


def _timed(frame_id: int, capture_ns: int, budget_ns: int | None, **changes: object
           ) -> pb.InferRequest:
    request = _frame(frame_id, **changes)
    request.capture_time_unix_ns = capture_ns
    request.deadline_unix_ns = 0 if budget_ns is None else capture_ns + budget_ns
    return request


def _round_trip(frames: list[pb.InferRequest], compact: bool) -> tuple[list[int], int]:
    """Each frame's wire bytes as the encoder sends it, and the worst time error after the
    decoder; everything but the times must come back exactly."""
    encoder, decoder = LeanEncoder(compact=compact), LeanDecoder()
    sizes, worst = [], 0
    for whole in frames:
        sent = encoder.encode(whole)
        sizes.append(wire_bytes(sent))
        back = decoder.expand(pb.InferRequest.FromString(sent.SerializeToString()))
        worst = max(worst, abs(back.capture_time_unix_ns - whole.capture_time_unix_ns),
                    abs(back.deadline_unix_ns - whole.deadline_unix_ns))
        back.capture_time_unix_ns = whole.capture_time_unix_ns
        back.deadline_unix_ns = whole.deadline_unix_ns
        assert back == whole
    return sizes, worst


def test_compact_lean_frames_leave_out_codec_shape_and_absolute_times() -> None:
    """15 fps with jitter for 1000 frames: every compact frame is ≥ 20 B smaller than the plain
    lean frame and its times come back within 1 µs (offsets are taken against what the edge
    holds, so rounding never accumulates)."""
    t0, budget = 1_790_000_000_123_456_789, 200_000_000
    frames = [_timed(i, t0 + i * 66_666_667 + (i * 7919) % 1000, budget) for i in range(1000)]
    plain, exact = _round_trip(frames, compact=False)
    compact, error = _round_trip(frames, compact=True)
    assert exact == 0 and error <= 1000
    assert plain[0] == compact[0]  # the first frame goes whole either way
    assert all(c <= p - 20 for p, c in zip(plain[1:], compact[1:], strict=True))


def test_compact_frames_fall_back_to_what_an_offset_cannot_say() -> None:
    t0, budget = 10**18, 300_000_000
    jpeg = infer_request(FrameRequest("tiny", "1", "jpeg-q90", ("detection",), "cam", 3,
                                      capture_time_ns=t0 + 3_000, deadline_ns=t0 + 3_000 + budget,
                                      original_size=(240, 320)),
                         image=codec_spec("JPEG").make().encode(np.zeros((8, 8, 3), np.uint8)))
    frames = [
        _timed(0, t0, budget),
        _timed(1, t0 + 1_000, budget),
        _timed(2, t0 + 2_000, budget * 2),  # a new budget: sent as an offset
        jpeg,  # whole (no input size, which the frame before had)
        _timed(4, t0 + 4_000, budget),  # after an image: the latent's codec and shape are sent
        _timed(5, t0 + 5_000, None),  # no deadline after one: absolute times say "none"
        _timed(6, t0 + 6_000, None),  # still none: inherited
        _timed(7, t0 - 1_000, budget),  # the clock went back: absolute times
        _timed(8, t0 + 8_000, budget * 2, branch="split-w025"),
    ]
    frames[8].latent.shape[:] = [1, 3, 4]  # another width: another shape, sent
    encoder, decoder = LeanEncoder(compact=True), LeanDecoder()
    sent = [encoder.encode(f) for f in frames]
    offsets = [s.HasField("capture_after_previous_us") for s in sent]
    assert offsets == [False, True, True, False, True, False, True, False, True]
    assert [s.HasField("deadline_after_capture_us") for s in sent] == [
        False, False, True, False, False, False, False, False, True]
    assert not sent[1].latent.codec and not sent[1].latent.shape
    assert sent[4].latent.codec and list(sent[4].latent.shape) == [2, 3, 4]
    assert list(sent[8].latent.shape) == [1, 3, 4]
    for whole, lean in zip(frames, sent, strict=True):
        back = decoder.expand(pb.InferRequest.FromString(lean.SerializeToString()))
        assert back == whole  # times on whole µs: exact


def test_compact_frames_refuse_what_they_cannot_expand() -> None:
    encoder = LeanEncoder(compact=True)
    first = encoder.encode(_timed(0, 10**18, 10**8))
    second = encoder.encode(_timed(1, 10**18 + 1000, 10**8))
    with pytest.raises(errors.InvalidRequest, match="earlier frame"):
        LeanDecoder().expand(second)
    decoder = LeanDecoder()
    jpeg = infer_request(FrameRequest("tiny", "1", "jpeg-q90", ("detection",), "cam", 0),
                         image=codec_spec("JPEG").make().encode(np.zeros((8, 8, 3), np.uint8)))
    decoder.expand(jpeg)
    with pytest.raises(errors.InvalidRequest, match="carried a latent"):
        decoder.expand(pb.InferRequest.FromString(second.SerializeToString()))
    both = pb.InferRequest.FromString(second.SerializeToString())
    both.capture_time_unix_ns = 10**18
    budget_alone = pb.InferRequest.FromString(second.SerializeToString())
    budget_alone.ClearField("capture_after_previous_us")
    budget_alone.deadline_after_capture_us = 5
    for bad, why in ((both, "not both"), (budget_alone, "comes with")):
        decoder = LeanDecoder()
        decoder.expand(pb.InferRequest.FromString(first.SerializeToString()))
        with pytest.raises(errors.InvalidRequest, match=why):
            decoder.expand(bad)
    whole_with_offset = _frame(0)
    whole_with_offset.capture_after_previous_us = 1
    for check in (check_whole, LeanDecoder().expand):
        with pytest.raises(errors.InvalidRequest, match="compact lean frames"):
            check(whole_with_offset)


def test_a_plain_lean_frame_without_a_deadline_has_none() -> None:
    """An older device's lean frames send absolute times: 0 is "no deadline", never the previous
    frame's budget (that reading is for compact frames only)."""
    decoder = LeanDecoder()
    decoder.expand(_timed(0, 10**18, 10**8))
    lean = _timed(1, 10**18 + 1000, None, lean=True, stream_id="")
    assert decoder.expand(lean).deadline_unix_ns == 0


def test_a_lean_frame_needs_a_frame_before_it() -> None:
    lean = LeanEncoder()
    lean.encode(_frame(0))
    orphan = lean.encode(_frame(1))
    with pytest.raises(errors.InvalidRequest, match="earlier frame"):
        LeanDecoder().expand(orphan)
