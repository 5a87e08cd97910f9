"""`pip install splitedge[device]` resolves without torch: what a Raspberry Pi would install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def resolve(extra: str, tmp_path: Path) -> set[str]:
    report = tmp_path / f"{extra}.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--report", str(report), "-c", str(ROOT / "constraints.txt"), f".[{extra}]",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower().replace("_", "-") for item in installs}


def test_device_extra_resolves_without_torch(tmp_path: Path) -> None:
    device = resolve("device", tmp_path)
    assert {"onnxruntime", "grpcio", "numpy", "constriction", "zstandard"} <= device
    assert not device & {"torch", "torchvision", "compressai"}
