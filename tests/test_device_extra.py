"""`pip install splitedge[device]` resolves without torch — on this machine and, from wheels alone,
on the aarch64 boards the daemon is for (Raspberry Pi OS bookworm: Python 3.11; Jetson JetPack 6:
Python 3.10). Resolving only for the build machine's own platform once hid a dependency with no
aarch64 wheel (constriction); these checks would have failed then."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH_SIDE = {"torch", "torchvision", "compressai"}
DEVICE_CORE = {"onnxruntime", "grpcio", "numpy", "zstandard", "opencv-python-headless"}
AARCH64 = ["--platform", "manylinux_2_28_aarch64", "--platform", "manylinux2014_aarch64"]


def resolve(extra: str, tmp_path: Path, *options: str) -> list[dict[str, object]]:
    report = tmp_path / f"{extra}.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--report", str(report), *options, f".[{extra}]",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    installs: list[dict[str, object]] = json.loads(report.read_text())["install"]
    return installs


def names(installs: list[dict[str, object]]) -> set[str]:
    return {item["metadata"]["name"].lower().replace("_", "-") for item in installs}  # type: ignore[index]


def test_device_extra_resolves_without_torch(tmp_path: Path) -> None:
    device = names(resolve("device", tmp_path, "-c", str(ROOT / "constraints.txt")))
    assert device >= DEVICE_CORE
    assert not device & TORCH_SIDE
    # The device codes latents with shared.codecs.ans on every platform unless asked for the
    # native coder (`native-ans`), so what it installs is the same on x86_64 and aarch64.
    assert "constriction" not in device


@pytest.mark.parametrize("python", ["3.10", "3.11"])
def test_device_extra_installs_from_wheels_on_aarch64(tmp_path: Path, python: str) -> None:
    installs = resolve(
        "device", tmp_path, "--only-binary=:all:", *AARCH64, "--python-version", python,
        "--target", str(tmp_path / "site"),
    )
    device = names(installs)
    assert device >= DEVICE_CORE
    assert not device & TORCH_SIDE
    wheels = [
        str(item["download_info"]["url"]).rsplit("/", 1)[-1]  # type: ignore[index]
        for item in installs
        if item["metadata"]["name"] != "splitedge"  # type: ignore[index]
    ]
    compiled = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert compiled and all("aarch64" in w for w in compiled), compiled


def test_the_aarch64_check_would_notice_a_package_without_arm_wheels(tmp_path: Path) -> None:
    """Guard the guard: constriction (no aarch64 Linux wheel) does not resolve the same way."""
    result = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--only-binary=:all:", *AARCH64, "--python-version", "3.11",
            "--target", str(tmp_path / "site"), "constriction",
        ],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode != 0
    assert "constriction" in result.stderr


def test_edge_extra_does_not_pull_the_device_stack(tmp_path: Path) -> None:
    edge = names(resolve("edge", tmp_path, "-c", str(ROOT / "constraints.txt")))
    assert edge >= {"torch", "fastapi", "grpcio-health-checking", "prometheus-client"}
    assert not edge & {"onnxruntime", "opencv-python-headless"}
