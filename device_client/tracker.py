"""Boxes carried from a detected frame to the frames after it, by optical flow on the device.

ApproxDet's group of frames: detect every k-th frame, track in between. `BoxTracker.seed` takes a
detected frame's boxes (when its result arrives, which may be a few frames later); `track` moves
them onto a new frame with pyramidal Lucas–Kanade on corner features inside each box (OpenCV,
which the device already has): a box moves by the median displacement of its points and scales
by the median change of their spread. A box that loses most of its points keeps its last place
with its score decayed, and is dropped below `min_score`.

Frames are kept as small grey images (`scale`), a few at a time, so that a result arriving late
can be seeded on the frame it was computed for. Never imports torch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import cv2
import numpy as np
import numpy.typing as npt

from shared.results import Detection

Grey = npt.NDArray[np.uint8]

_LK = {
    "winSize": (15, 15),
    "maxLevel": 3,
    "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03),
}


@dataclass(frozen=True)
class _Track:
    detection: Detection
    points: npt.NDArray[np.float32]  # (N, 1, 2) in the reference frame, scaled coordinates


class BoxTracker:
    def __init__(
        self,
        scale: float = 0.5,
        keep_frames: int = 16,
        points_per_box: int = 24,
        score_decay: float = 0.9,
        min_score: float = 0.2,
        max_tracks: int = 10,
    ) -> None:
        self.scale = scale
        self.keep_frames = keep_frames
        self.points_per_box = points_per_box
        self.score_decay = score_decay
        self.min_score = min_score
        self.max_tracks = max_tracks
        self._frames: OrderedDict[int, Grey] = OrderedDict()
        self._reference: Grey | None = None
        self._reference_id = -1
        self._seeded_id = -1
        self._tracks: list[_Track] = []
        self._lock = threading.Lock()

    def remember(self, frame_id: int, image: npt.NDArray[np.uint8]) -> None:
        """Keep a small grey copy of a frame that may be detected or tracked."""
        grey: Grey = np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
        if self.scale != 1.0:
            grey = cv2.resize(  # type: ignore[assignment]
                grey, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA
            )
        with self._lock:
            self._frames[frame_id] = grey
            while len(self._frames) > self.keep_frames:
                self._frames.popitem(last=False)

    def seed(self, frame_id: int, detections: tuple[Detection, ...]) -> bool:
        """Boxes detected on `frame_id` become the tracks, if no later detection was seeded and
        the frame is still remembered (a detection beats tracks carried from an older one, even
        onto later frames). Returns whether they were taken."""
        with self._lock:
            grey = self._frames.get(frame_id)
            if grey is None or frame_id <= self._seeded_id:
                return False
            self._seeded_id = frame_id
            tracks = []
            # The confident boxes only: a tracked frame must stay cheaper than a detected one.
            confident = sorted(
                (d for d in detections if d.score >= self.min_score), key=lambda d: -d.score
            )[: self.max_tracks]
            for detection in confident:
                points = self._features(grey, detection.box)
                if points is not None:
                    tracks.append(_Track(detection, points))
            self._reference, self._reference_id, self._tracks = grey, frame_id, tracks
            return True


    def track(self, frame_id: int) -> tuple[Detection, ...] | None:
        """The tracks moved onto a remembered frame; None when nothing was ever seeded."""
        with self._lock:
            grey = self._frames.get(frame_id)
            if self._reference is None or grey is None:
                return None
            moved: list[_Track] = []
            for track in self._tracks:
                new = self._move(track, self._reference, grey)
                if new is not None:
                    moved.append(new)
            # The frame just tracked becomes the reference: flow between neighbours is small.
            self._reference, self._reference_id, self._tracks = grey, frame_id, moved
            return tuple(t.detection for t in moved)

    # -- internals ---------------------------------------------------------------------------------
    def _features(
        self, grey: Grey, box: tuple[float, float, float, float]
    ) -> npt.NDArray[np.float32] | None:
        x1, y1, x2, y2 = (round(v * self.scale) for v in box)
        h, w = grey.shape
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 - x1 < 4 or y2 - y1 < 4:
            return None
        # Corners of the box and a small margin (an object's corners lie on its box's edge, and
        # the detector ignores a crop's border), not of the whole frame under a mask: that costs
        # a full frame per box.
        m = 4
        cx1, cy1, cx2, cy2 = max(0, x1 - m), max(0, y1 - m), min(w, x2 + m), min(h, y2 + m)
        points = cv2.goodFeaturesToTrack(
            np.ascontiguousarray(grey[cy1:cy2, cx1:cx2]),
            self.points_per_box,
            qualityLevel=0.01,
            minDistance=2,
        )
        if points is not None:
            points = points + np.array([cx1, cy1], dtype=np.float32)
        if points is None or len(points) < 3:
            # A flat box: track a grid of its points instead (LK still follows its edges).
            xs, ys = np.meshgrid(np.linspace(x1, x2 - 1, 5), np.linspace(y1, y2 - 1, 5))
            points = np.stack([xs.ravel(), ys.ravel()], -1)[:, None, :]
        return np.asarray(points, dtype=np.float32)

    def _move(self, track: _Track, before: Grey, after: Grey) -> _Track | None:
        moved, status, _ = cv2.calcOpticalFlowPyrLK(  # type: ignore[call-overload]
            before, after, track.points, None, **_LK
        )
        ok = status.reshape(-1) == 1
        detection = track.detection
        if ok.sum() < max(3, len(ok) // 3):
            score = detection.score * self.score_decay
            if score < self.min_score:
                return None
            return _Track(replace(detection, score=score), track.points)
        old, new = track.points[ok, 0], moved[ok, 0]
        shift = np.median(new - old, axis=0) / self.scale
        spread_old = np.median(np.linalg.norm(old - old.mean(0), axis=1))
        spread_new = np.median(np.linalg.norm(new - new.mean(0), axis=1))
        zoom = float(np.clip(spread_new / spread_old, 0.8, 1.25)) if spread_old > 1 else 1.0
        x1, y1, x2, y2 = detection.box
        cx, cy = (x1 + x2) / 2 + shift[0], (y1 + y2) / 2 + shift[1]
        hw, hh = (x2 - x1) / 2 * zoom, (y2 - y1) / 2 * zoom
        box = (float(cx - hw), float(cy - hh), float(cx + hw), float(cy + hh))
        return _Track(replace(detection, box=box), moved[ok].astype(np.float32))
