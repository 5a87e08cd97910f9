"""What the camera does to a scene: exposure, white balance, vignetting, blur, sensor noise and
compression artefacts. Parameters are drawn once per clip (a camera keeps its settings) and the
noise once per frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Rng = np.random.Generator


@dataclass(frozen=True)
class Camera:
    gain: float
    gamma: float
    white_balance: tuple[float, float, float]
    shading: float  # strength of a linear ramp (axis) or a vignette
    vignette: bool
    axis: int
    blur_sigma: float  # 0: sharp
    motion_blur: int  # kernel length, 0: none
    noise_sigma: float
    jpeg_quality: int  # 0: no recompression

    @staticmethod
    def draw(rng: Rng) -> Camera:
        blur = rng.random()
        return Camera(
            gain=float(rng.uniform(0.6, 1.35)),
            gamma=float(rng.uniform(0.7, 1.4)),
            white_balance=(float(rng.uniform(0.8, 1.2)), 1.0, float(rng.uniform(0.8, 1.2))),
            shading=float(rng.uniform(0, 0.35)),
            vignette=bool(rng.random() < 0.4),
            axis=int(rng.integers(2)),
            blur_sigma=float(rng.uniform(0.5, 1.6)) if blur < 0.3 else 0.0,
            motion_blur=int(rng.integers(3, 8)) if 0.3 <= blur < 0.4 else 0,
            noise_sigma=float(rng.uniform(0, 10)),
            jpeg_quality=int(rng.integers(25, 92)) if rng.random() < 0.25 else 0,
        )

    def apply(self, frame: npt.NDArray[np.float32], rng: Rng) -> npt.NDArray[np.uint8]:
        height, width = frame.shape[:2]
        if self.vignette:
            yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
            r = np.hypot((yy - height / 2) / height, (xx - width / 2) / width) * 1.4
            shade = 1 - self.shading * 1.5 * r**2
        else:
            ramp = np.linspace(-1, 1, width if self.axis else height, dtype=np.float32)
            shade = 1 + self.shading * (ramp[None, :] if self.axis else ramp[:, None])
        lit: npt.NDArray[Any] = 255 * (np.clip(frame / 255, 0, 1) ** self.gamma) * self.gain
        lit = lit * np.array(self.white_balance, np.float32) * np.asarray(shade)[:, :, None]
        if self.blur_sigma:
            lit = cv2.GaussianBlur(lit, (0, 0), self.blur_sigma)
        if self.motion_blur:
            kernel = np.zeros((self.motion_blur, self.motion_blur), np.float32)
            kernel[self.motion_blur // 2] = 1 / self.motion_blur
            if self.axis:
                kernel = kernel.T
            lit = cv2.filter2D(lit, -1, kernel)
        if self.noise_sigma:
            lit = lit + rng.normal(0, self.noise_sigma, lit.shape).astype(np.float32)
        image = np.clip(lit, 0, 255).astype(np.uint8)
        if self.jpeg_quality:
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if ok:
                image = np.asarray(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), np.uint8)
        return np.ascontiguousarray(image)
