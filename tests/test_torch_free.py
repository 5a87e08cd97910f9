"""The device side is torch-free: a fresh interpreter imports every module of device_client/ and
shared/ and torch, torchvision and compressai must still be absent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("torch", "torchvision", "compressai")

PROBE = """
import importlib, json, pkgutil, sys
imported = []
for package_name in ("shared", "device_client"):
    package = importlib.import_module(package_name)
    imported.append(package_name)
    for info in pkgutil.walk_packages(package.__path__, package_name + "."):
        importlib.import_module(info.name)
        imported.append(info.name)
print(json.dumps({"imported": imported, "loaded": sorted(sys.modules)}))
"""


def test_device_and_shared_modules_never_import_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout)
    assert "shared.codecs.factorized" in report["imported"]  # the walk really reached the modules
    assert "shared.wire.splitedge_pb2_grpc" in report["imported"]
    leaked = [m for m in report["loaded"] if m.split(".")[0] in FORBIDDEN]
    assert not leaked, f"device-side import pulled in {leaked[:5]}"


def test_the_probe_would_notice_torch() -> None:
    """Guard the guard: the same probe reports torch when a module does import it."""
    result = subprocess.run(
        [sys.executable, "-c", "import torch\n" + PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "torch" in json.loads(result.stdout)["loaded"]
