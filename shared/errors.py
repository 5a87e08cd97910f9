"""Typed errors of splitedge, as a tree. Catch the narrowest one you can act on.

    SplitEdgeError            anything splitedge raises on purpose
     ├── CodecError           bytes that cannot be decoded (malformed, truncated, wrong codec)
     │    └── LimitExceeded   declared sizes beyond the configured limits; nothing was allocated
     ├── TablesError          entropy tables that are inconsistent or do not fit the latent
     ├── BundleError          a model bundle that is corrupt, incomplete or of an unknown schema
     ├── TeacherError         a teacher name, weights enum or checkpoint that cannot be resolved
     ├── ConfigError          a config that is invalid: unknown keys, bad values (device daemon,
     │                        training experiments; at start-up)
     ├── SourceError          a frame source that cannot be opened or read (camera, file, RTSP)
     ├── UplinkUnavailable    the edge cannot be reached now (no stream); the device falls back
     └── FrameError           a frame the server answers without a result; `code` is its FrameCode
          ├── InvalidRequest  a request that names or carries the wrong things (INVALID_ARGUMENT)
          ├── UnknownModel    no such model, version or branch (NOT_FOUND)
          ├── DeadlineMissed  the frame cannot make its deadline; it was not computed
          ├── Overloaded      the server's queue is full; try again after `retry_after_ms`
          ├── Unauthenticated a missing or wrong bearer token
          ├── NotReady        the server is still loading its bundles (UNAVAILABLE)
          └── ShuttingDown    the server is draining and takes no new frames (UNAVAILABLE)

The FrameError codes are gRPC's canonical status numbers (the proto's FrameCode mirrors them), so
one table maps each way: an error's `code` is its in-band FrameCode and its gRPC status,
`http_status` its HTTP status, and `frame_error(code, message)` gives the device back the typed
error an edge answered with (`shared/messages.error_of` reads it off a reply). A test ties
`CODE_NAMES` to the proto's FrameCode.

Every message says what was wrong, what was expected, and what to do where that is not obvious.
"""

from __future__ import annotations


class SplitEdgeError(Exception):
    """Base of every error splitedge raises on purpose."""


class CodecError(SplitEdgeError):
    """A payload could not be decoded: malformed, truncated, or not what its codec id says."""


class LimitExceeded(CodecError):
    """A payload declares more data than the configured limits allow; nothing was allocated."""


class TablesError(SplitEdgeError):
    """Entropy tables are inconsistent, or do not match the latent they should code."""


class BundleError(SplitEdgeError):
    """A model bundle cannot be used: missing or extra files, a checksum mismatch, an invalid
    manifest, or a schema version this code does not know."""


class FrameError(SplitEdgeError):
    """A frame answered without a result; `code` is a gRPC canonical code (= proto FrameCode)."""

    code = 13  # INTERNAL: a subclass says what went wrong more precisely
    http_status = 500

    @property
    def code_name(self) -> str:
        """The code as the outcome lines and metrics spell it: `resource_exhausted`."""
        return CODE_NAMES.get(self.code, "unknown")


class InvalidRequest(FrameError):
    """A malformed request: wrong codec for the branch, bad shape, missing fields, bad bytes."""

    code = 3  # INVALID_ARGUMENT
    http_status = 400


class UnknownModel(FrameError):
    """No model, version or branch of that name; the message lists what exists."""

    code = 5  # NOT_FOUND
    http_status = 404


class DeadlineMissed(FrameError):
    """The frame cannot make its deadline, so it was answered at once and not computed."""

    code = 4  # DEADLINE_EXCEEDED
    http_status = 504


class Overloaded(FrameError):
    """The queue for this model is full. Retry after `retry_after_ms`."""

    code = 8  # RESOURCE_EXHAUSTED
    http_status = 429

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Unauthenticated(FrameError):
    """A bearer token is required and the request had none, or a wrong one."""

    code = 16  # UNAUTHENTICATED
    http_status = 401


class NotReady(FrameError):
    """The server is up but still loading or warming its bundles; retry shortly."""

    code = 14  # UNAVAILABLE
    http_status = 503


class ShuttingDown(FrameError):
    """The server is draining for shutdown; send new frames elsewhere or later."""

    code = 14  # UNAVAILABLE
    http_status = 503


class TeacherError(SplitEdgeError):
    """A teacher model cannot be built: unknown name, unknown weights, or a bad checkpoint."""


class ConfigError(SplitEdgeError):
    """A configuration that cannot be used (the device daemon's, a training experiment's); the
    message names every bad key and value."""


class SourceError(SplitEdgeError):
    """A frame source cannot be opened or read: a missing folder or file, a camera that does not
    open, an RTSP URL that does not answer."""


class UplinkUnavailable(SplitEdgeError):
    """The edge cannot take this frame now: no stream is up (connecting, backing off, or lost
    while the frame was in flight). The frame was not computed by the edge."""


# gRPC's canonical codes by name (= the proto's FrameCode without its FRAME_ prefix).
CODE_NAMES = {
    0: "ok",
    1: "cancelled",
    2: "unknown",
    3: "invalid_argument",
    4: "deadline_exceeded",
    5: "not_found",
    8: "resource_exhausted",
    9: "failed_precondition",
    13: "internal",
    14: "unavailable",
    16: "unauthenticated",
}

# The class a device rebuilds for each code. UNAVAILABLE is NotReady whether the edge was still
# loading or already draining: both mean "this edge, not now", and the message says which.
_BY_CODE: dict[int, type[FrameError]] = {
    InvalidRequest.code: InvalidRequest,
    UnknownModel.code: UnknownModel,
    DeadlineMissed.code: DeadlineMissed,
    Unauthenticated.code: Unauthenticated,
    NotReady.code: NotReady,
}


def frame_error(code: int, message: str, retry_after_ms: int = 0) -> FrameError:
    """The typed error for a FrameCode / gRPC status code (FrameError itself for codes without a
    class of their own, with that code)."""
    if code == Overloaded.code:
        return Overloaded(message, retry_after_ms)
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(message)
    error = FrameError(message)
    error.code = code
    return error
