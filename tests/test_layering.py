"""The edge never loads the device stack: a fresh interpreter imports every module of
edge_server/ and finds no device_client, onnxruntime or OpenCV (the device's torch-free rule is
tests/test_torch_free.py). It once did, through a constant the tail runtime took from the export
module, which imports the device's heads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICE_STACK = ("device_client", "onnxruntime", "cv2")

PROBE = """
import importlib, json, pkgutil, sys
import edge_server
imported = ["edge_server"]
for info in pkgutil.walk_packages(edge_server.__path__, "edge_server."):
    importlib.import_module(info.name)
    imported.append(info.name)
print(json.dumps({"imported": imported, "loaded": sorted(sys.modules)}))
"""


def probe(prelude: str = "") -> dict[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", prelude + PROBE],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=300,
    )
    report: dict[str, list[str]] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_the_edge_never_loads_the_device_stack() -> None:
    report = probe()
    assert "edge_server.app" in report["imported"]  # the walk really reached the modules
    assert "torch" in report["loaded"]
    leaked = sorted({m.split(".")[0] for m in report["loaded"]} & set(DEVICE_STACK))
    assert not leaked, f"importing edge_server loaded {leaked}"


def test_the_probe_would_notice_the_device_stack() -> None:
    """Guard the guard: the same probe reports it when something does import it."""
    report = probe("import device_client.head\n")
    assert {"device_client", "onnxruntime"} <= {m.split(".")[0] for m in report["loaded"]}
