"""The one translation layer between the wire (`splitedge.v1` messages and enums) and the domain.

    request = infer_request(FrameRequest(...), latent=payload)       # the device, tools, tests
    tasks = tasks_from_wire(request.tasks, served=manifest.tasks)    # the edge
    fill_results(response, results); results_of(response)            # both ends
    error = error_of(response.status)                                # a typed FrameError, or None
    lean = LeanEncoder().encode(request); whole = LeanDecoder().expand(lean)  # on a Stream
    wire_bytes(request)                                              # what gRPC sends for it
    response.status.CopyFrom(status_of(error))                     # in-band, on a stream
    context.abort(grpc_code(error), str(error))                      # a unary call's status
    JSONResponse(..., status_code=error.http_status)                 # HTTP (shared.errors)

Every wire ↔ domain map lives here or in the enum it is tied to (`shared.codecs.CodecId` for
codecs, `shared.errors` for frame codes): nothing else spells `TASK_…`, `FRAME_…` or `CODEC_…`.
Torch-free, and free of either side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc

from shared.bundle.manifest import Task
from shared.codecs import CodecId, Payload
from shared.errors import FrameError, InvalidRequest, Overloaded, frame_error
from shared.results import Classification, Detection, Results, ServerTimings
from shared.wire import pb

Size = tuple[int, int]  # (height, width)

TASK_IDS: dict[Task, pb.Task] = {
    "detection": pb.TASK_DETECTION,
    "classification": pb.TASK_CLASSIFICATION,
}
TASK_NAMES: dict[int, Task] = {wire: name for name, wire in TASK_IDS.items()}


# -- sizes and payloads ----------------------------------------------------------------------------
def latent_message(payload: Payload) -> pb.Latent:
    return pb.Latent(
        codec=pb.Codec.Name(payload.codec), shape=list(payload.shape), strings=payload.strings
    )


def latent_payload(latent: pb.Latent) -> Payload:
    """The Payload a latent message declares (its codec id is checked by `CodecId`)."""
    return Payload(CodecId(latent.codec), tuple(latent.shape), tuple(latent.strings))


def image_message(payload: Payload) -> pb.EncodedImage:
    return pb.EncodedImage(codec=pb.Codec.Name(payload.codec), data=payload.strings[0])


def image_size(size: Size) -> pb.ImageSize:
    return pb.ImageSize(height=size[0], width=size[1])


def size_of(message: pb.ImageSize) -> Size:
    return (message.height, message.width)


# -- tasks -----------------------------------------------------------------------------------------
def task_ids(tasks: Iterable[Task]) -> list[pb.Task]:
    return [TASK_IDS[t] for t in tasks]


def tasks_from_wire(ids: Sequence[int], served: Sequence[Task], model: str) -> tuple[Task, ...]:
    """The tasks a request asks for (all that `model` serves when it names none), sorted."""
    if not ids:
        return tuple(served)
    asked: set[Task] = set()
    for wire in ids:
        name = TASK_NAMES.get(wire)
        if name is None or name not in served:
            raise InvalidRequest(f"model {model} serves tasks {list(served)}, not {wire}")
        asked.add(name)
    return tuple(sorted(asked))


# -- requests --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameRequest:
    """What a request says about its frame besides the payload."""

    model_name: str
    model_version: str = ""
    branch_id: str = ""
    tasks: tuple[Task, ...] = ()
    stream_id: str = ""
    frame_id: int = 0
    capture_time_ns: int = 0
    deadline_ns: int = 0
    original_size: Size | None = None


def infer_request(
    frame: FrameRequest,
    *,
    latent: Payload | None = None,
    input_size: Size | None = None,
    image: Payload | None = None,
) -> pb.InferRequest:
    """The one way to build an InferRequest: a split frame's latent (with the size the head saw)
    or a whole frame's image."""
    if (latent is None) == (image is None):
        raise ValueError("a request carries exactly one of a latent or an image")
    request = pb.InferRequest(
        stream_id=frame.stream_id,
        frame_id=frame.frame_id,
        model_name=frame.model_name,
        model_version=frame.model_version,
        branch_id=frame.branch_id,
        tasks=task_ids(frame.tasks),
        capture_time_unix_ns=frame.capture_time_ns,
        deadline_unix_ns=frame.deadline_ns,
    )
    if frame.original_size is not None:
        request.original_size.CopyFrom(image_size(frame.original_size))
    if latent is not None:
        request.latent.CopyFrom(latent_message(latent))
        if input_size is not None:
            request.input_size.CopyFrom(image_size(input_size))
    elif image is not None:
        request.image.CopyFrom(image_message(image))
    return request


# -- results ---------------------------------------------------------------------------------------
def fill_results(response: pb.InferResponse, results: Results) -> None:
    for det in results.detections:
        x1, y1, x2, y2 = det.box
        response.detections.add(
            box=pb.Box(x_min=x1, y_min=y1, x_max=x2, y_max=y2),
            score=det.score,
            label_id=det.label_id,
            label=det.label,
        )
    for cls in results.classifications:
        response.classifications.add(label_id=cls.label_id, score=cls.score, label=cls.label)


def results_of(response: pb.InferResponse) -> Results:
    return Results(
        tuple(
            Detection((d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max), d.score,
                      d.label_id, d.label)
            for d in response.detections
        ),
        tuple(Classification(c.label_id, c.score, c.label) for c in response.classifications),
    )


def timings_message(timings: ServerTimings) -> pb.StageTimings:
    return pb.StageTimings(
        queue_wait_ms=timings.queue_wait_ms,
        decode_ms=timings.decode_ms,
        tail_ms=timings.tail_ms,
        total_ms=timings.total_ms,
        batch_size=timings.batch_size,
    )


def timings_of(response: pb.InferResponse) -> ServerTimings:
    t = response.timings
    return ServerTimings(t.queue_wait_ms, t.decode_ms, t.tail_ms, t.total_ms, t.batch_size)


# -- frame status ----------------------------------------------------------------------------------
OK = pb.FrameStatus(code=pb.FRAME_OK)


def status_of(error: FrameError) -> pb.FrameStatus:
    """A frame's in-band status for a typed error (FrameCode numbers are gRPC's)."""
    known = error.code in pb.FrameCode.values()
    return pb.FrameStatus(
        code=pb.FrameCode.Name(error.code) if known else "FRAME_INTERNAL",
        message=str(error),
        retry_after_ms=error.retry_after_ms if isinstance(error, Overloaded) else 0,
    )


_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(error: FrameError) -> grpc.StatusCode:
    """A unary call's gRPC status for a typed error (the same number as its FrameCode)."""
    return _GRPC_CODES.get(error.code, grpc.StatusCode.INTERNAL)


def error_of(status: pb.FrameStatus) -> FrameError | None:
    """The typed error an in-band status stands for; None for FRAME_OK."""
    if status.code == pb.FRAME_OK:
        return None
    return frame_error(status.code, status.message, status.retry_after_ms)


# -- bytes on the wire, and lean stream frames ----------------------------------------------------
GRPC_PREFIX = 5  # gRPC's length prefix of every message: a compressed flag and 4 bytes of length
HTTP2_DATA_HEADER = 9  # the HTTP/2 DATA frame header that carries it
# A Stream's initial metadata from an edge that takes lean frames; an edge that also takes compact
# ones (latent codec and shape left out, times as offsets) sends the second pair as well.
LEAN_HEADER = ("splitedge-stream", "lean")
COMPACT_HEADER = ("splitedge-stream", "lean-compact")
_SETTINGS = ("stream_id", "model_name", "model_version", "branch_id")
_SIZES = ("original_size", "input_size")
_OFFSETS = ("capture_after_previous_us", "deadline_after_capture_us")
_MAX_OFFSET_US = 2**32 - 1  # a uint32


def wire_bytes(message: pb.InferRequest) -> int:
    """What gRPC sends for a message: the serialized message, gRPC's prefix and the HTTP/2 DATA
    frame header. The one way bytes on the wire are counted (outcomes, metrics, the scheduler's
    link estimate, the evaluation's bytes per frame)."""
    return message.ByteSize() + GRPC_PREFIX + HTTP2_DATA_HEADER


def check_whole(request: pb.InferRequest) -> None:
    """InvalidRequest unless `request` stands on its own (a unary call's, a stream's first)."""
    if request.lean:
        raise InvalidRequest("a unary Infer request is always whole: lean is for Stream")
    if any(request.HasField(name) for name in _OFFSETS):
        raise InvalidRequest("capture_after_previous_us and deadline_after_capture_us are for "
                             "compact lean frames on a Stream; a whole frame sends its times")


@dataclass
class _Clock:
    """A stream's times as the receiving end holds them: the last frame's capture time and its
    budget (deadline − capture time, None without a deadline). Both ends keep one, so the sender
    computes each offset against what the edge will add it to (no rounding drift)."""

    capture_ns: int = 0
    budget_ns: int | None = None

    def hold(self, capture_ns: int, deadline_ns: int) -> None:
        self.capture_ns = capture_ns
        self.budget_ns = deadline_ns - capture_ns if deadline_ns > 0 else None


class LeanEncoder:
    """The sending end of one Stream: each request as a lean frame against the one before it;
    with `compact` (the edge announced COMPACT_HEADER) the latent's codec and shape and the
    absolute times are left out too. One per stream (a new stream starts whole); not
    thread-safe: the sender orders the frames."""

    def __init__(self, compact: bool = False) -> None:
        self.compact = compact
        self._last: pb.InferRequest | None = None
        self._clock = _Clock()

    def encode(self, request: pb.InferRequest) -> pb.InferRequest:
        last, self._last = self._last, request
        if last is None:
            self._clock.hold(request.capture_time_unix_ns, request.deadline_unix_ns)
            return request
        lean = pb.InferRequest()
        lean.CopyFrom(request)
        for name in _SETTINGS:
            value = getattr(request, name)
            if value == getattr(last, name):
                lean.ClearField(name)
            elif not value:
                return self._whole(request)  # changed to its default: a lean frame cannot say so
        if list(request.tasks) == list(last.tasks):
            lean.ClearField("tasks")
        elif not request.tasks:
            return self._whole(request)
        for name in _SIZES:
            if not request.HasField(name):
                if last.HasField(name):
                    return self._whole(request)
            elif getattr(request, name) == getattr(last, name):
                lean.ClearField(name)
        lean.lean = True
        if self.compact:
            self._compact(lean, last)
        else:
            self._clock.hold(request.capture_time_unix_ns, request.deadline_unix_ns)
        return lean

    def _whole(self, request: pb.InferRequest) -> pb.InferRequest:
        self._clock.hold(request.capture_time_unix_ns, request.deadline_unix_ns)
        return request

    def _compact(self, lean: pb.InferRequest, last: pb.InferRequest) -> None:
        if lean.HasField("latent") and last.HasField("latent"):
            if lean.latent.codec == last.latent.codec:
                lean.latent.ClearField("codec")
            if list(lean.latent.shape) == list(last.latent.shape):
                lean.latent.ClearField("shape")
        capture, deadline = lean.capture_time_unix_ns, lean.deadline_unix_ns
        clock = self._clock
        offset_us = round((capture - clock.capture_ns) / 1000)
        budget_us = round((deadline - capture) / 1000) if deadline > 0 else None
        if (capture == 0  # no times at all: nothing on the wire either way
                or not 0 <= offset_us <= _MAX_OFFSET_US
                or (budget_us is None and clock.budget_ns is not None)  # "none" needs absolutes
                or (budget_us is not None and not 0 <= budget_us <= _MAX_OFFSET_US)):
            clock.hold(capture, deadline)  # absolute times, as a plain lean frame sends them
            return
        lean.ClearField("capture_time_unix_ns")
        lean.ClearField("deadline_unix_ns")
        lean.capture_after_previous_us = offset_us
        if budget_us is not None and budget_us * 1000 != clock.budget_ns:
            lean.deadline_after_capture_us = budget_us
        clock.capture_ns += offset_us * 1000  # what the edge adds up, not `capture`
        clock.budget_ns = None if budget_us is None else budget_us * 1000


class LeanDecoder:
    """The receiving end of one Stream: lean (and compact) frames back to whole requests, in
    stream order."""

    def __init__(self) -> None:
        self._last: pb.InferRequest | None = None
        self._clock = _Clock()

    def expand(self, request: pb.InferRequest) -> pb.InferRequest:
        """The whole request; InvalidRequest for a lean frame with no frame before it, or a
        compact one that leaves out what the frame before it did not have."""
        if not request.lean:
            check_whole(request)
            self._hold(request)
            return request
        last = self._last
        if last is None:
            raise InvalidRequest(
                "a lean frame needs an earlier frame on its stream; send the first one whole"
            )
        compact = request.HasField("capture_after_previous_us")
        if request.HasField("deadline_after_capture_us") and not compact:
            raise InvalidRequest("deadline_after_capture_us comes with capture_after_previous_us")
        if compact and (request.capture_time_unix_ns or request.deadline_unix_ns):
            raise InvalidRequest("a compact lean frame sends its times as offsets or absolute, "
                                 "not both")
        if request.HasField("latent") and (
            not request.latent.codec or not request.latent.shape
        ):
            if not last.HasField("latent"):
                raise InvalidRequest("a compact lean frame leaves out the latent's codec or "
                                     "shape only after a frame that carried a latent")
            if not request.latent.codec:
                request.latent.codec = last.latent.codec
            if not request.latent.shape:
                request.latent.shape.extend(last.latent.shape)
        for name in _SETTINGS:
            if not getattr(request, name):
                setattr(request, name, getattr(last, name))
        if not request.tasks:
            request.tasks.extend(last.tasks)
        for name in _SIZES:
            if not request.HasField(name) and last.HasField(name):
                getattr(request, name).CopyFrom(getattr(last, name))
        if compact:
            clock = self._clock
            request.capture_time_unix_ns = (clock.capture_ns
                                            + request.capture_after_previous_us * 1000)
            budget = (request.deadline_after_capture_us * 1000
                      if request.HasField("deadline_after_capture_us") else clock.budget_ns)
            request.deadline_unix_ns = 0 if budget is None else (
                request.capture_time_unix_ns + budget)
            for name in _OFFSETS:
                request.ClearField(name)
        request.lean = False
        self._hold(request)
        return request

    def _hold(self, request: pb.InferRequest) -> None:
        self._last = request
        self._clock.hold(request.capture_time_unix_ns, request.deadline_unix_ns)
