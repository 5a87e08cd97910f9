"""The device's half of a split model: every width's head ONNX loaded at once, the prefilter gate,
and the entropy coder, built once per bundle.

    runner = HeadRunner.load("bundles/demo-shapes")
    runner.set_width(0.5)                      # an index changes; no session is created
    out = runner.run(frame_rgb)                # preprocess → (gate) → head → quantize → encode
    out.payload                                # None when the prefilter said "nothing here"
    out.timings_ms                             # {"preprocess", "prefilter"?, "head"?, "encode"?}

The pipeline runs the same steps in two calls, because the branch is chosen between them:
`prepare` (preprocess, and the gate when asked) for every frame, then `encode` (head, the head's
own score, entropy coding) only for frames that take a split branch. `run` is the two together.
`head`, `prefilter` and `codec` stay public for tools that time or compare the raw graphs.

Regions of interest: when the manifest has `regions`, the head's `regions` output
(P(object) per cell) picks the cells that are coded; the rest of the latent is left out of the
payload and reaches the edge as the prior's medians (shared.codecs.Regions). `use_regions=False`
codes every position.

Gating: with `gate=True` the small prefilter graph (stem + prefilter) runs first and the head only
when the score reaches the manifest's threshold; otherwise the head's own score output is used
and the frame is always encoded. The stem then runs twice for frames that pass, so gating pays
off only when most frames are empty; `benchmarks/heads.py` measures both graphs.

Never imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from device_client.preprocess import HeadInput, Image, Preprocessor
from shared.bundle import Bundle, load_bundle
from shared.codecs import FactorizedAnsCodec, FactorizedTables, Payload, Regions
from shared.errors import BundleError


@dataclass(frozen=True)
class Prepared:
    """A frame ready for a head: preprocessed and, with the gate on, scored by the prefilter."""

    head_input: HeadInput
    gate_score: float | None  # None when the gate did not run
    timings_ms: dict[str, float]

    def gated_out(self, threshold: float) -> bool:
        return self.gate_score is not None and self.gate_score < threshold


@dataclass(frozen=True)
class HeadOutput:
    """One frame's result on the device. `latent` and `payload` are None when gated out."""

    head_input: HeadInput
    prefilter_score: float
    latent: npt.NDArray[np.float32] | None
    payload: Payload | None
    timings_ms: dict[str, float]  # preprocess, prefilter (gated), head, encode

    @property
    def head_ms(self) -> float:
        """Gate, head and encoding: the device's share of a split frame after preprocessing."""
        return sum(ms for stage, ms in self.timings_ms.items() if stage != "preprocess")


CPU_ONLY = ("CPUExecutionProvider",)


def make_session(
    path: Path, threads: int | None = None, providers: Sequence[str] = CPU_ONLY
) -> ort.InferenceSession:
    """One onnxruntime session; `providers` in preference order (CUDA/TensorRT on a Jetson)."""
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=list(providers))


class HeadRunner:
    """All heads of one bundle, ready at once; `set_width` switches between them for free."""

    def __init__(
        self,
        bundle: Bundle,
        threads: int | None = None,
        providers: Sequence[str] = CPU_ONLY,
        use_regions: bool = True,
    ) -> None:
        manifest = bundle.manifest
        self.bundle = bundle
        self.preprocess = Preprocessor(manifest.preprocessing)
        self.threshold = manifest.prefilter.threshold
        self.widths = tuple(h.width for h in manifest.heads)
        self.sessions = {
            h.width: make_session(bundle.path(h.file), threads, providers) for h in manifest.heads
        }
        self.gate_session = make_session(bundle.path(manifest.prefilter.file), threads, providers)
        self.codec = FactorizedAnsCodec(FactorizedTables.load(bundle.path(manifest.entropy_file)))
        self.width = max(self.widths)
        self.warm_overhead_ms: float | None = None  # set by warm_up
        self.regions = manifest.regions if use_regions else None
        # per width: the cells at or above this are coded (the manifest's validator ensures one
        # per head when it codes regions)
        self.region_thresholds = {h.width: h.regions_threshold or 0.0 for h in manifest.heads}
        if self.regions is not None:
            for head_width, session in self.sessions.items():
                if [o.name for o in session.get_outputs()][2:3] != ["regions"]:
                    raise BundleError(f"the manifest codes regions, but the width {head_width} "
                                      "head has no `regions` output")

    @classmethod
    def load(cls, root: Path | str, threads: int | None = None) -> HeadRunner:
        return cls(load_bundle(root), threads)

    def warm_up(self, height: int = 240, width: int = 320) -> dict[float, float]:
        """Run every graph and the coder: onnxruntime's first call allocates and plans, and a
        first frame that takes ten times the next would mislead the scheduler. Returns each
        width's head + encode ms of a second run, measured on this device as it is loaded now."""
        frame = np.zeros((height, width, 3), np.uint8)
        for _ in range(2):
            prepared = self.prepare(frame, "RGB", gate=True)
        # what every frame costs before its branch runs, warm: the scheduler's first estimate
        self.warm_overhead_ms = sum(prepared.timings_ms.values())
        image = prepared.head_input.image
        current = self.width
        measured = {}
        for head_width in self.widths:
            self.width = head_width
            for _ in range(2):
                start = time.perf_counter()
                latent, _, _ = self.head_with_regions(image)
                self.codec.encode(latent)  # every position: the most a frame's coding costs
            measured[head_width] = (time.perf_counter() - start) * 1e3
        self.width = current
        return measured

    def set_width(self, width: float) -> None:
        matches = [w for w in self.widths if abs(w - width) < 1e-9]
        if not matches:
            raise BundleError(f"width {width} is not in this bundle; it has {self.widths}")
        self.width = matches[0]

    def head(self, image: Image) -> tuple[npt.NDArray[np.float32], float]:
        """(latent (C, H, W) pre-quantization, prefilter score) for a preprocessed image."""
        latent, score, _ = self.head_with_regions(image)
        return latent, score

    def head_with_regions(
        self, image: Image
    ) -> tuple[npt.NDArray[np.float32], float, Regions | None]:
        """`head`, plus the cells to code (None: all of them, when the bundle has no regions)."""
        outputs = self.sessions[self.width].run(None, {"image": image})
        latent, score = outputs[0][0], float(outputs[1].reshape(-1)[0])
        if self.regions is None:
            return latent, score, None
        cells = outputs[2][0, 0] >= self.region_thresholds[self.width]
        return latent, score, Regions(cells, self.regions.cell)

    def prefilter(self, image: Image) -> float:
        (score,) = self.gate_session.run(None, {"image": image})
        return float(score.reshape(-1)[0])

    def prepare(self, frame: Image, colour_order: str = "RGB", gate: bool = False) -> Prepared:
        """Preprocess a captured frame; with `gate`, also run the small prefilter graph."""
        started = time.perf_counter()
        head_input = self.preprocess(frame, colour_order)
        timings = {"preprocess": _since(started)}
        score = None
        if gate:
            started = time.perf_counter()
            score = self.prefilter(head_input.image)
            timings["prefilter"] = _since(started)
        return Prepared(head_input, score, timings)

    def encode(
        self, prepared: Prepared, width: float | None = None, threshold: float | None = None
    ) -> HeadOutput:
        """The head at `width` (default: the current one), then the entropy coder. Without the
        gate, the head's own prefilter score decides: below `threshold` nothing is encoded."""
        if width is not None:
            self.set_width(width)
        timings = dict(prepared.timings_ms)
        started = time.perf_counter()
        latent, score, regions = self.head_with_regions(prepared.head_input.image)
        timings["head"] = _since(started)
        if prepared.gate_score is not None:
            score = prepared.gate_score
        elif threshold is not None and score < threshold:
            return HeadOutput(prepared.head_input, score, None, None, timings)
        started = time.perf_counter()
        payload = self.codec.encode(latent, regions)
        timings["encode"] = _since(started)
        return HeadOutput(prepared.head_input, score, latent, payload, timings)

    def run(self, frame: Image, colour_order: str = "RGB", gate: bool = False) -> HeadOutput:
        """`prepare` and `encode` in one call; gated out below the manifest's threshold."""
        prepared = self.prepare(frame, colour_order, gate)
        if prepared.gate_score is not None and prepared.gated_out(self.threshold):
            return HeadOutput(
                prepared.head_input, prepared.gate_score, None, None, prepared.timings_ms
            )
        return self.encode(prepared)


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1e3
