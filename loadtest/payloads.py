"""Real request payloads for the load tests, made the way a device makes them.

Frames come from the device's own generator (moving shapes, every frame with objects); each is
preprocessed as the bundle says, run through the bundle's head ONNX at every width and entropy
coded with the bundle's factorized tables (a latent per split branch), and JPEG-coded for the
full-offload branch. Built once per locust process, then reused: the load generator spends its
CPU on the wire, not on heads.

    payloads = build_payloads(bundle, frames=8)
    request = payloads.request("split-w050", index=3, stream_id="cam-7", frame_id=42, sla_ms=300)

Never imports torch (the locust workers run where the devices would).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from device_client.bundles import BundleStore
from device_client.config import BundleConfig, GeneratedSource
from device_client.head import HeadRunner
from device_client.sources import ShapesGenerator
from shared.bundle import Bundle, load_bundle
from shared.codecs import CodecId, make_codec
from shared.messages import FrameRequest, infer_request
from shared.wire import pb

JPEG_QUALITY = 90  # the jpeg-q90 branch of the demo bundle; the device's own full-offload codec


@dataclass
class PayloadSet:
    """Request templates per branch id (split widths and the JPEG branch) + the raw JPEG bytes."""

    model: str
    version: str
    templates: dict[str, list[pb.InferRequest]] = field(default_factory=dict)
    jpegs: list[bytes] = field(default_factory=list)

    @property
    def branches(self) -> list[str]:
        return list(self.templates)

    def mean_bytes(self, branch: str) -> float:
        sizes = [t.ByteSize() for t in self.templates[branch]]
        return sum(sizes) / len(sizes)

    def request(
        self, branch: str, index: int, stream_id: str, frame_id: int, sla_ms: float
    ) -> pb.InferRequest:
        """A fresh request: the template's payload, this frame's ids, capture time and deadline."""
        templates = self.templates[branch]
        request = pb.InferRequest()
        request.CopyFrom(templates[index % len(templates)])
        now = time.time_ns()
        request.stream_id = stream_id
        request.frame_id = frame_id
        request.capture_time_unix_ns = now
        request.deadline_unix_ns = now + int(sla_ms * 1e6) if sla_ms > 0 else 0
        return request


def fetch_bundle(http_url: str, name: str, cache: Path, token: str | None = None) -> Bundle:
    """The bundle as a device gets it: downloaded from the edge, sha256-checked, cached."""
    config = BundleConfig(url=http_url, name=name)
    return BundleStore(cache, config, token).resolve()


def build_payloads(
    bundle: Bundle | Path | str,
    frames: int = 8,
    widths: Sequence[float] | None = None,
    size: tuple[int, int] = (240, 320),
    seed: int = 0,
) -> PayloadSet:
    """`frames` generated frames of `size` (height, width) → requests for each split width
    (default: every head of the bundle) and for the bundle's JPEG branch."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(Path(bundle))
    manifest = bundle.manifest
    source = GeneratedSource(
        kind="generated", width=size[1], height=size[0], seed=seed, empty_run=0
    )
    generator = ShapesGenerator(source)
    images = [generator.frame(i) for i in range(frames)]
    head = HeadRunner(bundle, threads=1)
    payloads = PayloadSet(manifest.name, manifest.version)
    chosen = set(head.widths if widths is None else widths)

    for branch in manifest.branches:
        if branch.kind == "split" and branch.width in chosen:
            head.set_width(branch.width)
            requests = []
            for image in images:
                out = head.run(image)
                assert out.payload is not None  # not gated: every frame is encoded
                requests.append(infer_request(
                    _about(manifest.name, manifest.version, branch.id, image.shape),
                    latent=out.payload,
                    input_size=out.head_input.geometry.input_size,
                ))
            payloads.templates[branch.id] = requests
        elif branch.kind == "jpeg":
            codec = make_codec(CodecId.JPEG, quality=JPEG_QUALITY)
            requests = []
            for image in images:
                jpeg = codec.encode(image)
                payloads.jpegs.append(jpeg.strings[0])
                requests.append(infer_request(
                    _about(manifest.name, manifest.version, branch.id, image.shape), image=jpeg
                ))
            payloads.templates[branch.id] = requests
    if not payloads.templates:
        raise ValueError(f"bundle {manifest.name} has no split or jpeg branch to load-test")
    return payloads


def _about(model: str, version: str, branch: str, shape: tuple[int, ...]) -> FrameRequest:
    return FrameRequest(model, version, branch, original_size=(int(shape[0]), int(shape[1])))
