"""Readers for any COCO-format detection dataset, or a plain folder of frames (unlabeled).

    frames = CocoFrames("data/shapes/test.json")        # images resolve against the JSON's folder
    frame = frames[0]                  # Frame(image uint8 HWC RGB, boxes xyxy, labels)
    frames = FolderFrames("my_frames/")                # HND/GHND need nothing more

Labels are contiguous 1..K in the order of the sorted COCO category ids (torchvision's convention:
0 is the background); `category_ids[label - 1]` maps back for pycocotools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True)
class Frame:
    image: npt.NDArray[np.uint8]  # HxWx3 RGB
    boxes: npt.NDArray[np.float32]  # (n, 4) x1, y1, x2, y2 in pixels
    labels: npt.NDArray[np.int64]  # (n,) 1..K
    image_id: int
    labelled: bool = True


def read_rgb(path: Path) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return np.ascontiguousarray(image[:, :, ::-1])


class CocoFrames:
    """A COCO detection file: images (relative to `image_root`, default the JSON's folder) and
    their boxes. Crowd annotations are skipped for training (pycocotools handles them in eval)."""

    def __init__(self, annotations: Path | str, image_root: Path | str | None = None) -> None:
        self.annotation_file = Path(annotations)
        raw: dict[str, Any] = json.loads(self.annotation_file.read_text())
        self.root = Path(image_root) if image_root is not None else self.annotation_file.parent
        self.images: list[dict[str, Any]] = sorted(raw["images"], key=lambda im: im["id"])
        categories = sorted(raw["categories"], key=lambda c: c["id"])
        self.category_ids = tuple(int(c["id"]) for c in categories)
        self.class_names = tuple(str(c["name"]) for c in categories)
        label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        self._boxes: dict[int, list[tuple[list[float], int]]] = {im["id"]: [] for im in self.images}
        for ann in raw.get("annotations", []):
            if ann.get("iscrowd", 0) or ann["image_id"] not in self._boxes:
                continue
            x, y, w, h = ann["bbox"]
            if w < 1 or h < 1:
                continue
            label = label_of[ann["category_id"]]
            self._boxes[ann["image_id"]].append(([x, y, x + w, y + h], label))

    @property
    def num_classes(self) -> int:
        """With the background."""
        return len(self.category_ids) + 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Frame:
        info = self.images[index]
        image = read_rgb(self.root / info["file_name"])
        found = self._boxes[info["id"]]
        boxes = np.array([b for b, _ in found], np.float32).reshape(-1, 4)
        labels = np.array([label for _, label in found], np.int64)
        return Frame(image, boxes, labels, int(info["id"]))


class FolderFrames:
    """Every image under a folder, sorted by path, without labels (HND/GHND, prefilter by the
    teacher's own detections)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")
        self.class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Frame:
        return Frame(read_rgb(self.paths[index]), np.zeros((0, 4), np.float32),
                     np.zeros((0,), np.int64), index + 1, labelled=False)


Frames = CocoFrames | FolderFrames


def open_frames(source: Path | str) -> Frames:
    """A COCO JSON file or a folder of images."""
    path = Path(source)
    if path.is_dir():
        return FolderFrames(path)
    if path.suffix == ".json":
        return CocoFrames(path)
    raise ValueError(f"{path}: expected a COCO annotation .json or a folder of images")


def frame_label(frame: Frame) -> int:
    """A frame-level class for the classification task: the largest object's label, 0 if none."""
    if len(frame.labels) == 0:
        return 0
    areas = (frame.boxes[:, 2] - frame.boxes[:, 0]) * (frame.boxes[:, 3] - frame.boxes[:, 1])
    return int(frame.labels[int(np.argmax(areas))])
