"""Frame → head input, as the bundle's manifest says: resize (OpenCV bilinear), crop, pad.

The output is uint8 NHWC in the manifest's colour order; mean/std are applied inside the head
graph, so the device never converts a frame to float. Never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from shared.bundle.geometry import FrameGeometry, frame_geometry
from shared.bundle.manifest import Preprocessing

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class HeadInput:
    """A preprocessed frame: `image` is (1, H, W, 3) uint8, padded; `geometry` maps it back."""

    image: Image
    geometry: FrameGeometry


class Preprocessor:
    """Built once per bundle; `__call__` per frame."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.spec = preprocessing
        self._pad = np.array(preprocessing.pad_value, dtype=np.uint8)

    def __call__(self, frame: Image, colour_order: str = "RGB") -> HeadInput:
        """`frame`: HWC uint8 as captured, in `colour_order` (OpenCV reads BGR)."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"a frame is HxWx3 uint8, got {frame.shape} {frame.dtype}")
        geometry = frame_geometry((frame.shape[0], frame.shape[1]), self.spec)
        if colour_order != self.spec.colour_order:
            frame = frame[:, :, ::-1]
        height, width = geometry.resized
        if (height, width) != geometry.original:
            resized = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
            frame = np.asarray(resized, dtype=np.uint8)
        top, left, crop_h, crop_w = geometry.crop
        frame = frame[top : top + crop_h, left : left + crop_w]
        image = np.empty((1, *geometry.padded, 3), dtype=np.uint8)
        image[0] = self._pad  # the padding: the mean colour, ~0 after normalization
        image[0, :crop_h, :crop_w] = frame
        return HeadInput(image, geometry)
