from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Codec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODEC_UNSPECIFIED: _ClassVar[Codec]
    CODEC_FACTORIZED_ANS: _ClassVar[Codec]
    CODEC_UINT8_ZSTD: _ClassVar[Codec]
    CODEC_FP16_ZSTD: _ClassVar[Codec]
    CODEC_JPEG: _ClassVar[Codec]
    CODEC_WEBP: _ClassVar[Codec]
    CODEC_PNG: _ClassVar[Codec]

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_DETECTION: _ClassVar[Task]
    TASK_CLASSIFICATION: _ClassVar[Task]

class FrameCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_OK: _ClassVar[FrameCode]
    FRAME_CANCELLED: _ClassVar[FrameCode]
    FRAME_UNKNOWN: _ClassVar[FrameCode]
    FRAME_INVALID_ARGUMENT: _ClassVar[FrameCode]
    FRAME_DEADLINE_EXCEEDED: _ClassVar[FrameCode]
    FRAME_NOT_FOUND: _ClassVar[FrameCode]
    FRAME_RESOURCE_EXHAUSTED: _ClassVar[FrameCode]
    FRAME_FAILED_PRECONDITION: _ClassVar[FrameCode]
    FRAME_INTERNAL: _ClassVar[FrameCode]
    FRAME_UNAVAILABLE: _ClassVar[FrameCode]
    FRAME_UNAUTHENTICATED: _ClassVar[FrameCode]
CODEC_UNSPECIFIED: Codec
CODEC_FACTORIZED_ANS: Codec
CODEC_UINT8_ZSTD: Codec
CODEC_FP16_ZSTD: Codec
CODEC_JPEG: Codec
CODEC_WEBP: Codec
CODEC_PNG: Codec
TASK_UNSPECIFIED: Task
TASK_DETECTION: Task
TASK_CLASSIFICATION: Task
FRAME_OK: FrameCode
FRAME_CANCELLED: FrameCode
FRAME_UNKNOWN: FrameCode
FRAME_INVALID_ARGUMENT: FrameCode
FRAME_DEADLINE_EXCEEDED: FrameCode
FRAME_NOT_FOUND: FrameCode
FRAME_RESOURCE_EXHAUSTED: FrameCode
FRAME_FAILED_PRECONDITION: FrameCode
FRAME_INTERNAL: FrameCode
FRAME_UNAVAILABLE: FrameCode
FRAME_UNAUTHENTICATED: FrameCode

class ImageSize(_message.Message):
    __slots__ = ("width", "height")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Latent(_message.Message):
    __slots__ = ("codec", "shape", "strings")
    CODEC_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    codec: Codec
    shape: _containers.RepeatedScalarFieldContainer[int]
    strings: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, codec: _Optional[_Union[Codec, str]] = ..., shape: _Optional[_Iterable[int]] = ..., strings: _Optional[_Iterable[bytes]] = ...) -> None: ...

class EncodedImage(_message.Message):
    __slots__ = ("codec", "data")
    CODEC_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    codec: Codec
    data: bytes
    def __init__(self, codec: _Optional[_Union[Codec, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("stream_id", "frame_id", "model_name", "model_version", "branch_id", "tasks", "latent", "image", "original_size", "input_size", "capture_time_unix_ns", "deadline_unix_ns", "lean", "capture_after_previous_us", "deadline_after_capture_us")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BRANCH_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    LEAN_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_AFTER_PREVIOUS_US_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_AFTER_CAPTURE_US_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    frame_id: int
    model_name: str
    model_version: str
    branch_id: str
    tasks: _containers.RepeatedScalarFieldContainer[Task]
    latent: Latent
    image: EncodedImage
    original_size: ImageSize
    input_size: ImageSize
    capture_time_unix_ns: int
    deadline_unix_ns: int
    lean: bool
    capture_after_previous_us: int
    deadline_after_capture_us: int
    def __init__(self, stream_id: _Optional[str] = ..., frame_id: _Optional[int] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., branch_id: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[Task, str]]] = ..., latent: _Optional[_Union[Latent, _Mapping]] = ..., image: _Optional[_Union[EncodedImage, _Mapping]] = ..., original_size: _Optional[_Union[ImageSize, _Mapping]] = ..., input_size: _Optional[_Union[ImageSize, _Mapping]] = ..., capture_time_unix_ns: _Optional[int] = ..., deadline_unix_ns: _Optional[int] = ..., lean: _Optional[bool] = ..., capture_after_previous_us: _Optional[int] = ..., deadline_after_capture_us: _Optional[int] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x_min", "y_min", "x_max", "y_max")
    X_MIN_FIELD_NUMBER: _ClassVar[int]
    Y_MIN_FIELD_NUMBER: _ClassVar[int]
    X_MAX_FIELD_NUMBER: _ClassVar[int]
    Y_MAX_FIELD_NUMBER: _ClassVar[int]
    x_min: float
    y_min: float
    x_max: float
    y_max: float
    def __init__(self, x_min: _Optional[float] = ..., y_min: _Optional[float] = ..., x_max: _Optional[float] = ..., y_max: _Optional[float] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("box", "score", "label_id", "label")
    BOX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LABEL_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    box: Box
    score: float
    label_id: int
    label: str
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., score: _Optional[float] = ..., label_id: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("label_id", "label", "score")
    LABEL_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label_id: int
    label: str
    score: float
    def __init__(self, label_id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("queue_wait_ms", "decode_ms", "tail_ms", "total_ms", "batch_size")
    QUEUE_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    TAIL_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queue_wait_ms: float
    decode_ms: float
    tail_ms: float
    total_ms: float
    batch_size: int
    def __init__(self, queue_wait_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., tail_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class FrameStatus(_message.Message):
    __slots__ = ("code", "message", "retry_after_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    code: FrameCode
    message: str
    retry_after_ms: int
    def __init__(self, code: _Optional[_Union[FrameCode, str]] = ..., message: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("stream_id", "frame_id", "model_name", "model_version", "branch_id", "status", "detections", "classifications", "timings")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BRANCH_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    frame_id: int
    model_name: str
    model_version: str
    branch_id: str
    status: FrameStatus
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    classifications: _containers.RepeatedCompositeFieldContainer[Classification]
    timings: StageTimings
    def __init__(self, stream_id: _Optional[str] = ..., frame_id: _Optional[int] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., branch_id: _Optional[str] = ..., status: _Optional[_Union[FrameStatus, _Mapping]] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., classifications: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("model_name",)
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    def __init__(self, model_name: _Optional[str] = ...) -> None: ...

class Branch(_message.Message):
    __slots__ = ("id", "kind", "width", "rate_lambda", "input_size", "expected_bytes", "device_ms", "edge_ms", "accuracy", "codec")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    RATE_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MS_FIELD_NUMBER: _ClassVar[int]
    EDGE_MS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    width: float
    rate_lambda: float
    input_size: ImageSize
    expected_bytes: float
    device_ms: float
    edge_ms: float
    accuracy: float
    codec: Codec
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., width: _Optional[float] = ..., rate_lambda: _Optional[float] = ..., input_size: _Optional[_Union[ImageSize, _Mapping]] = ..., expected_bytes: _Optional[float] = ..., device_ms: _Optional[float] = ..., edge_ms: _Optional[float] = ..., accuracy: _Optional[float] = ..., codec: _Optional[_Union[Codec, str]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "tasks", "classes", "branches")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    BRANCHES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    tasks: _containers.RepeatedScalarFieldContainer[Task]
    classes: _containers.RepeatedScalarFieldContainer[str]
    branches: _containers.RepeatedCompositeFieldContainer[Branch]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[Task, str]]] = ..., classes: _Optional[_Iterable[str]] = ..., branches: _Optional[_Iterable[_Union[Branch, _Mapping]]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...
