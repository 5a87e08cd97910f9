"""The bundle loader (torch-free): valid bundles load, anything corrupt or unknown is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.bundle import (
    HeadFile,
    LatentSpec,
    Manifest,
    MinMaxSideResize,
    PrefilterSpec,
    Preprocessing,
    load_bundle,
    write_manifest,
)
from shared.bundle.geometry import frame_geometry, min_max_side_size
from shared.bundle.manifest import SCHEMA_VERSION, FileDigest
from shared.errors import BundleError

FILES = (
    "head_w050.onnx",
    "head_w100.onnx",
    "prefilter.onnx",
    "entropy.npz",
    "tail.pt",
    "local.onnx",
)


def make_bundle(root: Path) -> Path:
    root.mkdir()
    for i, name in enumerate(FILES):
        (root / name).write_bytes(bytes([i]) * (100 + i))
    placeholder = FileDigest(sha256="0" * 64, bytes=0)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name="demo",
        version="1",
        tasks=("detection",),
        classes={"detection": ("__background__", "cat")},
        preprocessing=Preprocessing(
            resize=MinMaxSideResize(min_size=320, max_size=512, size_divisible=32),
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
            pad_value=(128, 128, 128),
        ),
        latent=LatentSpec(channels=8, stride=8),
        heads=(
            HeadFile(width=0.5, latent_channels=4, file="head_w050.onnx"),
            HeadFile(width=1.0, latent_channels=8, file="head_w100.onnx"),
        ),
        prefilter=PrefilterSpec(file="prefilter.onnx", threshold=0.3),
        entropy_file="entropy.npz",
        tail_file="tail.pt",
        local_files={"detection": "local.onnx"},
        branches=(),
        files={name: placeholder for name in FILES},
    )
    write_manifest(root, manifest)
    return root


def test_round_trip(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "b"))
    assert bundle.manifest.head_for(0.5).latent_channels == 4
    assert bundle.path("tail.pt") == tmp_path / "b" / "tail.pt"
    assert bundle.manifest.files["local.onnx"].bytes == 105
    with pytest.raises(BundleError, match=r"no head of width 0\.75"):
        bundle.manifest.head_for(0.75)


def test_tampered_file_refused(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    (root / "entropy.npz").write_bytes(b"\x09" * 103)  # same size, other bytes
    with pytest.raises(BundleError, match=r"entropy\.npz has sha256 .* changed"):
        load_bundle(root)
    load_bundle(root, verify=False)  # size/existence checks only


def test_missing_file_refused(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    (root / "local.onnx").unlink()
    with pytest.raises(BundleError, match=r"local\.onnx is missing"):
        load_bundle(root)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(schema_version=2), "schema_version 2"),
        (lambda m: m.pop("schema_version"), "schema_version None"),
        (lambda m: m.update(surprise=1), "surprise"),
        (lambda m: m["files"].pop("tail.pt"), "no sha256"),
        (
            lambda m: m["files"].update({"../etc/passwd": m["files"]["tail.pt"]}),
            "leaves the bundle",
        ),
        (lambda m: m["heads"][0].update(latent_channels=99), "more than the latent"),
        # a label derived from a task the bundle does not serve, or from itself
        (lambda m: m.update(derived={"classification": {"rule": "largest_object",
                                                         "min_score": 0.5}}), "derived task"),
        (lambda m: m.update(derived={"detection": {"rule": "largest_object",
                                                    "min_score": 0.5}}), "not the same one"),
        (lambda m: m.update(derived={"detection": {"rule": "biggest", "min_score": 0.5}}),
         "largest_object"),
    ],
)
def test_bad_manifest_refused(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    root = make_bundle(tmp_path / "b")
    raw = json.loads((root / "manifest.json").read_text())
    edit(raw)
    (root / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=message):
        load_bundle(root)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable"):
        load_bundle(tmp_path)


@pytest.mark.parametrize(
    ("original", "resized"),
    [((480, 640), (320, 426)), ((1080, 1920), (288, 512)), ((333, 500), (320, 480))],
)
def test_min_max_side_matches_torchvision(
    original: tuple[int, int], resized: tuple[int, int]
) -> None:
    assert min_max_side_size(original, 320, 512) == resized


def test_padding_to_the_divisor(tmp_path: Path) -> None:
    spec = load_bundle(make_bundle(tmp_path / "b")).manifest.preprocessing
    geometry = frame_geometry((480, 640), spec)
    assert geometry.input_size == (320, 426) and geometry.padded == (320, 448)
