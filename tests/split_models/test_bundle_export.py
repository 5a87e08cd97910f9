"""An exported bundle loads on both sides, switches widths with no reload, and runs on a device
with no torch installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from device_client.head import HeadRunner  # noqa: E402
from shared.bundle import load_bundle  # noqa: E402
from shared.errors import BundleError  # noqa: E402
from split_models.cli import main as cli  # noqa: E402
from split_models.runtime import TailRuntime  # noqa: E402
from tests.bundles import Demo, frame  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_round_trip_manifest_describes_the_files(demo: Demo) -> None:
    manifest = load_bundle(demo.root).manifest
    assert manifest.tasks == ("detection", "classification")
    assert [h.latent_channels for h in manifest.heads] == [3, 6, 9, 12]
    assert manifest.prefilter.threshold == 0.5
    split = [b for b in manifest.branches if b.kind == "split"]
    assert [b.latent_channels for b in split] == [3, 6, 9, 12]
    assert all(b.expected_bytes and b.device_ms and b.edge_ms for b in split)
    assert {b.kind for b in manifest.branches} == {"split", "local", "jpeg", "webp", "skip"}
    images = [(b.id, b.quality) for b in manifest.branches if b.kind in ("jpeg", "webp")]
    assert images == [(f"{kind}-q{q}", q) for kind in ("jpeg", "webp") for q in (30, 50, 70, 90)]
    assert all(b.expected_bytes and b.device_ms for b in manifest.branches
               if b.kind in ("jpeg", "webp"))
    on_disk = [p.name for p in demo.root.iterdir() if p.name != "manifest.json"]
    assert sorted(manifest.files) == sorted(on_disk)


def test_tampered_or_unknown_schema_bundle_is_refused(demo: Demo, tmp_path: Path) -> None:
    tampered = shutil.copytree(demo.root, tmp_path / "tampered")
    head = tampered / "head_w050.onnx"
    data = bytearray(head.read_bytes())
    data[len(data) // 2] ^= 0xFF
    head.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"head_w050\.onnx has sha256"):
        TailRuntime.load(tampered)
    with pytest.raises(BundleError, match="sha256"):
        HeadRunner.load(tampered)

    future = shutil.copytree(demo.root, tmp_path / "future")
    manifest = json.loads((future / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (future / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema_version 99"):
        HeadRunner.load(future)


def test_width_switch_changes_channels_and_bytes_without_reload(demo: Demo) -> None:
    runner = HeadRunner.load(demo.root)
    sessions = dict(runner.sessions)
    image = frame(360, 480, seed=5)
    sizes = {}
    for width in (1.0, 0.25, 0.75, 0.5, 1.0):
        runner.set_width(width)
        out = runner.run(image)
        assert out.latent is not None and out.payload is not None
        sizes[width] = (out.latent.shape[0], out.payload.nbytes)
    assert [sizes[w][0] for w in (0.25, 0.5, 0.75, 1.0)] == [3, 6, 9, 12]
    assert sizes[0.25][1] < sizes[1.0][1]
    assert all(runner.sessions[w] is s for w, s in sessions.items())  # nothing was reloaded

    weight = demo.student.head.encoder.layers[0].weight
    demo.student.set_width(0.25)
    assert demo.student.head.encoder.layers[0].weight is weight
    demo.student.set_width(1.0)


def test_prefilter_gate_skips_the_encoder_below_threshold(demo: Demo) -> None:
    runner = HeadRunner.load(demo.root)
    image = frame(360, 480, seed=6)
    score = runner.run(image).prefilter_score
    runner.threshold = score + 1e-3
    skipped = runner.run(image, gate=True)
    assert skipped.payload is None and skipped.prefilter_score == pytest.approx(score, abs=1e-5)
    runner.threshold = score - 1e-3
    assert runner.run(image, gate=True).payload is not None


DEVICE_PROBE = """
import json, sys
import numpy as np
from device_client.head import HeadRunner
from device_client.local import LocalRunner
runner = HeadRunner.load(sys.argv[1])
local = LocalRunner.load(sys.argv[1])
frame = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
out = runner.run(frame)
found = local.detect(frame)
print(json.dumps({"channels": int(out.latent.shape[0]), "bytes": out.payload.nbytes,
                  "local": int(found.boxes.shape[1]),
                  "torch": sorted(m for m in sys.modules if m.split(".")[0] in
                                  ("torch", "torchvision", "compressai"))}))
"""


def test_device_loads_and_runs_the_bundle_without_torch(demo: Demo) -> None:
    result = subprocess.run(
        [sys.executable, "-c", DEVICE_PROBE, str(demo.root)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    report = json.loads(result.stdout)
    assert report == {"channels": 12, "bytes": report["bytes"], "local": 4, "torch": []}
    assert report["bytes"] > 0


def test_cli_exports_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli(["export", "--teacher", "tiny_resnet", "--name", "tiny-cls", "--out",
                str(tmp_path / "b"), "--latent-channels", "8", "--widths", "0.5,1.0",
                "--inner-channels", "16"])
    assert code == 0
    manifest = load_bundle(tmp_path / "b").manifest
    assert manifest.preprocessing.resize.kind == "resize_center_crop"
    assert [h.latent_channels for h in manifest.heads] == [4, 8]
    runner = HeadRunner.load(tmp_path / "b")
    out = runner.run(frame(100, 150))
    assert out.latent is not None and out.latent.shape == (8, 8, 8)  # 64 px crop, stride 8
    [result] = TailRuntime.load(tmp_path / "b").run_latents(
        [runner.codec.decode(out.payload)], [(64, 64)], [(100, 150)]  # type: ignore[arg-type]
    )
    assert len(result.classifications) == 5 and not result.detections

    assert cli(["export", "--teacher", "no_such_net", "--name", "x", "--out", str(tmp_path)]) == 2
    assert "known: fasterrcnn_resnet50_fpn_v2" in capsys.readouterr().err


def test_ssdlite_exports_and_runs_on_both_sides(tmp_path: Path) -> None:
    """SSDLite stretches every frame to 320×320: the manifest says so (a `fixed` resize rule),
    the device's head sees 320×320 whatever the camera's aspect, and the edge's tail and the
    device's local model map boxes back to the original frame with one scale per axis."""
    from device_client.local import LocalRunner

    code = cli(["export", "--teacher", "ssdlite320_mobilenet_v3_large", "--name", "ssd",
                "--out", str(tmp_path / "ssd"), "--latent-channels", "6", "--widths", "1.0",
                "--inner-channels", "16"])
    assert code == 0
    bundle = load_bundle(tmp_path / "ssd")
    resize = bundle.manifest.preprocessing.resize
    assert (resize.kind, resize.height, resize.width) == ("fixed", 320, 320)  # type: ignore[union-attr]
    runner = HeadRunner(bundle, threads=1)
    image = frame(240, 320)
    out = runner.run(image)
    geometry = out.head_input.geometry
    assert out.head_input.image.shape == (1, 320, 320, 3) and geometry.original == (240, 320)
    assert out.payload is not None and out.latent is not None
    [result] = TailRuntime.load(tmp_path / "ssd").run_latents(
        [runner.codec.decode(out.payload)], [geometry.input_size], [geometry.original])
    local = LocalRunner(bundle, threads=1).run(image, ("detection",))
    for found in (result, local):
        assert found.detections  # a random-init SSD scores every anchor: some survive
        assert all(0 <= d.box[0] <= d.box[2] <= 320 and 0 <= d.box[1] <= d.box[3] <= 240
                   for d in found.detections)
