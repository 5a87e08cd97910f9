"""Where frames come from: an image folder, a video file, a camera / V4L2 device / RTSP URL, or a
generated test stream. Every source yields RGB `Frame`s with consecutive ids from 0.

Files are read on demand (the pipeline pulls; paced to an FPS or as fast as it can). Live sources
(cameras, and the generated stream with `live: true`) are read by a capture thread into a bounded
`LiveBuffer`: when the pipeline falls behind, the *oldest* frame is dropped, because a live
camera's newest frame is the one worth computing. A dropped frame is not lost from the books: it
is handed to `on_drop`, so the pipeline records its outcome.

Never imports torch.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from device_client.config import (
    CameraSource,
    FolderSource,
    GeneratedSource,
    SourceConfig,
    VideoSource,
)
from shared.errors import SourceError

Pixels = npt.NDArray[np.uint8]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Frame:
    """One captured frame: HxWx3 uint8 RGB. `has_objects` is known only for generated frames."""

    frame_id: int
    image: Pixels = field(repr=False)
    capture_time_ns: int  # wall clock (unix ns): the deadline and the wire use it
    captured: float  # monotonic seconds: local latency arithmetic uses it
    has_objects: bool | None = None


DropHandler = Callable[[Frame, str], None]


class FrameSource(Protocol):
    """Iterate to get frames; `close()` (from any thread) ends the iteration soon after."""

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


# -- the generated streams ------------------------------------------------------------------------
class SceneGenerator:
    """The benchmark's scenes as a stream (`device_client.scenes.MovingScene`): `object_run`
    frames with 1–3 of the clip's objects, then `empty_run` frames of the background alone."""

    def __init__(self, config: GeneratedSource) -> None:
        from device_client.scenes import MovingScene, SceneConfig

        self.config = config
        self.scene = MovingScene(config.seed, SceneConfig(height=config.height,
                                                          width=config.width))

    def has_objects(self, index: int) -> bool:
        cycle = self.config.object_run + self.config.empty_run
        return index % cycle < self.config.object_run

    def boxes(self, index: int) -> list[tuple[int, int, int, int]]:
        """The objects visible on frame `index` as (x1, y1, x2, y2): its ground truth."""
        drawn = self.scene.frame(index, self.has_objects(index), count=1 + index % 3)
        return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in
                (placed.box for placed in drawn.objects)]

    def frame(self, index: int) -> Pixels:
        return self.scene.frame(index, self.has_objects(index), count=1 + index % 3).image


def frame_generator(config: GeneratedSource) -> SceneGenerator | ShapesGenerator:
    return SceneGenerator(config) if config.scenes == "benchmark" else ShapesGenerator(config)


class ShapesGenerator:
    """The plumbing stream: moving rectangles and discs on a textured background.

    Frames come in stretches: `object_run` frames with 1–3 shapes, then `empty_run` frames of
    background only (the prefilter should skip those). Frame `i` is the same for the same
    settings, whatever was asked before, so a test can rebuild any frame in-process.
    """

    def __init__(self, config: GeneratedSource) -> None:
        self.config = config
        rng = np.random.default_rng(config.seed)
        h, w = config.height, config.width
        # A smooth gradient plus fixed noise: a flat grey frame would be too easy for a gate.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([60 + 40 * xx / w, 80 + 30 * yy / h, 70 + 20 * (xx + yy) / (w + h)], -1)
        noise = rng.normal(0, 4, size=(h, w, 3))
        self.background: Pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        self.shapes = [
            (
                rng.uniform(0.1, 0.9, 2) * (w, h),  # start centre (x, y)
                rng.uniform(-6, 6, 2),  # velocity, pixels per frame
                rng.uniform(0.08, 0.22) * min(w, h),  # half-size
                tuple(int(c) for c in rng.integers(150, 256, 3)),  # bright colour
                bool(rng.integers(0, 2)),  # disc or rectangle
            )
            for _ in range(3)
        ]

    def has_objects(self, index: int) -> bool:
        cycle = self.config.object_run + self.config.empty_run
        return index % cycle < self.config.object_run

    def boxes(self, index: int) -> list[tuple[int, int, int, int]]:
        """The shapes drawn on frame `index` as (x1, y1, x2, y2): its ground truth."""
        if not self.has_objects(index):
            return []
        h, w = self.config.height, self.config.width
        span = np.array([w, h], dtype=np.float64)
        out = []
        for start, velocity, size, _colour, disc in self.shapes[: 1 + index % 3]:
            # Bounce inside the frame: a triangle wave of the unbounded position.
            pos = span - np.abs(np.mod(start + velocity * index, 2 * span) - span)
            x, y, r = int(pos[0]), int(pos[1]), int(size)
            half_height = r if disc else r // 2
            out.append((x - r, y - half_height, x + r, y + half_height))
        return out

    def frame(self, index: int) -> Pixels:
        image: Pixels = self.background.copy()
        count = 1 + index % 3
        for box, (_start, _velocity, _size, colour, disc) in zip(
            self.boxes(index), self.shapes[:count], strict=False
        ):
            x1, y1, x2, y2 = box
            if disc:
                cv2.circle(image, ((x1 + x2) // 2, (y1 + y2) // 2), (x2 - x1) // 2, colour, -1)
            else:
                cv2.rectangle(image, (x1, y1), (x2, y2), colour, -1)
        return image


# -- pulled sources (files, generated) ------------------------------------------------------------
class _Pacer:
    """Sleeps so that frame i leaves at start + i/fps (no drift); fps None: never sleeps."""

    def __init__(self, fps: float | None, stop: threading.Event) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self.stop = stop
        self.start: float | None = None
        self.count = 0

    def wait(self) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if self.start is None:
            self.start = now
        due = self.start + self.count * self.period
        self.count += 1
        if due > now:
            self.stop.wait(due - now)


class GeneratedFrames:
    """The generated stream, pulled: paced at `fps` (a file-like test source)."""

    def __init__(self, config: GeneratedSource, pace: bool = True) -> None:
        self.generator = frame_generator(config)
        self.config = config
        self._stop = threading.Event()
        self._pacer = _Pacer(config.fps if pace else None, self._stop)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while not self._stop.is_set() and (
            self.config.frames is None or index < self.config.frames
        ):
            self._pacer.wait()
            if self._stop.is_set():
                return
            yield Frame(
                index,
                self.generator.frame(index),
                time.time_ns(),
                time.monotonic(),
                self.generator.has_objects(index),
            )
            index += 1

    def close(self) -> None:
        self._stop.set()


class ImageFolder:
    """Every image in a folder, by name; unreadable files are skipped with a warning-free count."""

    def __init__(self, config: FolderSource) -> None:
        if not config.path.is_dir():
            raise SourceError(f"source.path {config.path} is not a directory")
        self.paths = sorted(
            p for p in config.path.glob(config.pattern) if p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.paths:
            raise SourceError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) match {config.pattern!r} in {config.path}"
            )
        self.config = config
        self.unreadable = 0
        self._stop = threading.Event()
        self._pacer = _Pacer(config.fps, self._stop)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while not self._stop.is_set():
            for path in self.paths:
                if self._stop.is_set():
                    return
                bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if bgr is None:
                    self.unreadable += 1
                    continue
                self._pacer.wait()
                yield Frame(index, _rgb(bgr), time.time_ns(), time.monotonic())
                index += 1
            if not self.config.loop:
                return

    def close(self) -> None:
        self._stop.set()


class VideoFile:
    """A video file via OpenCV, at its own FPS (`pace`) or as fast as it decodes."""

    def __init__(self, config: VideoSource) -> None:
        if not config.path.is_file():
            raise SourceError(f"source.path {config.path} is not a file")
        self.config = config
        self._stop = threading.Event()
        capture = _open(str(config.path))
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or 30.0
        capture.release()
        self._pacer = _Pacer(fps if config.pace else None, self._stop)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while not self._stop.is_set():
            capture = _open(str(self.config.path))
            try:
                while not self._stop.is_set():
                    ok, bgr = capture.read()
                    if not ok:
                        break
                    self._pacer.wait()
                    yield Frame(index, _rgb(bgr), time.time_ns(), time.monotonic())
                    index += 1
            finally:
                capture.release()
            if not self.config.loop:
                return

    def close(self) -> None:
        self._stop.set()


# -- live sources ---------------------------------------------------------------------------------
class LiveBuffer:
    """A bounded FIFO between a capture thread and the pipeline that drops the oldest frame."""

    def __init__(self, capacity: int, on_drop: DropHandler) -> None:
        self.capacity = capacity
        self.on_drop = on_drop
        self.dropped = 0
        self._frames: collections.deque[Frame] = collections.deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, frame: Frame) -> bool:
        """Queue `frame`, evicting the oldest when full; False when the buffer is closed."""
        evicted = None
        with self._ready:
            if self._closed:
                return False
            if len(self._frames) >= self.capacity:
                evicted = self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self._ready.notify()
        if evicted is not None:
            self.on_drop(evicted, "behind")  # outside the lock: the handler writes to sinks
        return True

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest frame; None once closed and empty (or after `timeout`)."""
        with self._ready:
            if not self._frames and not self._closed:
                self._ready.wait(timeout)
            return self._frames.popleft() if self._frames else None

    def finish(self) -> None:
        """The producer is done: the frames still waiting are served, then `get` returns None."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def close(self) -> list[Frame]:
        """Stop now; return what was still waiting (the caller accounts for it)."""
        with self._ready:
            self._closed = True
            left = list(self._frames)
            self._frames.clear()
            self._ready.notify_all()
        return left

    @property
    def closed(self) -> bool:
        return self._closed


class LiveSource:
    """A capture thread reading `grab()` as fast as the device delivers, into a LiveBuffer."""

    def __init__(
        self, grab: Callable[[], Iterator[Frame]], capacity: int, on_drop: DropHandler
    ) -> None:
        self.buffer = LiveBuffer(capacity, on_drop)
        self._grab = grab
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._capture, name="capture", daemon=True)
        self._started = False
        self.on_drop = on_drop

    def _capture(self) -> None:
        try:
            for frame in self._grab():
                if not self.buffer.put(frame):
                    self.on_drop(frame, "shutdown")
                    return
        except BaseException as exc:  # surfaced in the pipeline's thread by __iter__
            self.error = exc
        finally:
            self.buffer.finish()

    def __iter__(self) -> Iterator[Frame]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            frame = self.buffer.get(timeout=0.5)
            if frame is not None:
                yield frame
            elif self.buffer.closed:
                break
        self._thread.join(timeout=5)
        if self.error is not None:
            raise SourceError(f"capture failed: {self.error}") from self.error

    def close(self) -> None:
        for frame in self.buffer.close():
            self.on_drop(frame, "shutdown")


def _camera_frames(config: CameraSource, stop: threading.Event) -> Iterator[Frame]:
    """Frames from a camera; a lost stream (RTSP drop, USB unplug) is reopened after a pause."""
    uri: int | str = int(config.uri) if config.uri.isdigit() else config.uri
    index = 0
    while not stop.is_set():
        capture = _open(uri)
        if config.width:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
        if config.height:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
        if config.fps:
            capture.set(cv2.CAP_PROP_FPS, config.fps)
        try:
            while not stop.is_set():
                ok, bgr = capture.read()
                if not ok:
                    break
                yield Frame(index, _rgb(bgr), time.time_ns(), time.monotonic())
                index += 1
        finally:
            capture.release()
        stop.wait(config.reopen_s)


def open_source(config: SourceConfig, queue: int, on_drop: DropHandler) -> FrameSource:
    """The source a config names. Live ones buffer at most `queue` frames, dropping the oldest."""
    if isinstance(config, GeneratedSource):
        if not config.live:
            return GeneratedFrames(config)
        frames = GeneratedFrames(config)
        live = LiveSource(lambda: iter(frames), queue, on_drop)
        return _Closing(live, frames.close)
    if isinstance(config, FolderSource):
        folder = ImageFolder(config)
        if not config.live:
            return folder
        return _Closing(LiveSource(lambda: iter(folder), queue, on_drop), folder.close)
    if isinstance(config, VideoSource):
        return VideoFile(config)
    stop = threading.Event()
    _open(int(config.uri) if config.uri.isdigit() else config.uri).release()  # fail fast
    return _Closing(LiveSource(lambda: _camera_frames(config, stop), queue, on_drop), stop.set)


class _Closing:
    """A live source whose producer must also be told to stop."""

    def __init__(self, live: LiveSource, stop_producer: Callable[[], None]) -> None:
        self.live = live
        self._stop_producer = stop_producer

    @property
    def dropped(self) -> int:
        return self.live.buffer.dropped

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.live)

    def close(self) -> None:
        self._stop_producer()
        self.live.close()


def _open(uri: int | str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(uri)
    if not capture.isOpened():
        capture.release()
        hint = (
            "check the index/device and that this user is in the `video` group"
            if isinstance(uri, int) or str(uri).startswith("/dev/")
            else "check the path or URL, and that OpenCV was built with FFmpeg/GStreamer"
        )
        raise SourceError(f"cannot open video source {uri!r}: {hint}")
    return capture


def _rgb(bgr: npt.NDArray[Any]) -> Pixels:
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
