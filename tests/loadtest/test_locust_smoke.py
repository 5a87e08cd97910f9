"""CI smoke run of the locust users: a real edge (the shipped demo bundle) on loopback, a few
seconds of headless locust with every user class, real payloads. Fails on any failure that is
not load shedding (RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, a full camera window, HTTP 429/503)
and when a user class got no answer at all. Timings are printed, never asserted."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.statuses import SHED_ERRORS
from splitedge.process import SplitedgeProcess

# Checked without importing: importing locust would monkey-patch this pytest process with gevent.
for _needed in ("locust", "torch"):  # torch: the edge process needs the edge extra
    if importlib.util.find_spec(_needed) is None:
        pytest.skip(f"{_needed} is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "demo-shapes"
USERS = ("CameraStream", "UnaryInfer", "HttpInfer", "BundleDownload")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    log = tmp_path_factory.mktemp("edge") / "edge.log"
    process = SplitedgeProcess(
        ["serve", "--bundle", BUNDLE, "--grpc-port", "0", "--http-port", "0",
         "--max-batch-size", "4"],
        log,
    ).start()  # fmt: skip
    try:
        yield process.wait_for("ready", timeout=180)["listening"]
    finally:
        process.stop(30)


def test_every_user_class_gets_answers_and_nothing_but_shedding_fails(
    edge: dict[str, Any], tmp_path: Path
) -> None:
    prefix = tmp_path / "smoke"
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
         "--headless", "--users", "6", "--spawn-rate", "6", "--run-time", "10s",
         "--stop-timeout", "3", "--only-summary", "--csv", str(prefix),
         "--host", f"http://127.0.0.1:{edge['http_port']}",
         "--grpc-target", f"127.0.0.1:{edge['grpc_port']}",
         "--cache-dir", str(tmp_path), "--frames", "1", "--fps", "5", "--sla-ms", "0",
         *USERS],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout[-4000:] + result.stderr[-4000:]
    print(output)
    assert prefix.with_name("smoke_stats.csv").exists(), output

    with prefix.with_name("smoke_stats.csv").open() as handle:
        stats = {row["Name"]: row for row in csv.DictReader(handle) if row["Name"] != "Aggregated"}
    with prefix.with_name("smoke_failures.csv").open() as handle:
        failures = list(csv.DictReader(handle))

    unexpected = [f for f in failures if f["Error"] not in SHED_ERRORS]
    assert not unexpected, f"failures other than load shedding: {unexpected}\n{output}"
    answered = {
        name: int(row["Request Count"]) - int(row["Failure Count"]) for name, row in stats.items()
    }
    # Every path was exercised with a real answer: the stream and unary gRPC per payload kind,
    # the HTTP inference, the bundle download and its 304 revalidation.
    for prefix_name in ("Stream split-", "Stream jpeg-", "Infer split-", "Infer jpeg-",
                        "POST /v1/infer", "GET bundle", "GET bundle (If-None-Match)"):  # fmt: skip
        assert any(n.startswith(prefix_name) and answered[n] > 0 for n in answered), (
            f"no successful {prefix_name!r} request: {answered}\n{output}"
        )

    # One frame per branch, so a unary request is that frame whole, every time. The cameras
    # send as the daemon does: lean compact frames once the edge announces them, so a split
    # frame on the stream costs less than the same frame whole (by ~60 B; 20 B leaves room for
    # the first, whole frame and for frames whose branch differs from the one before).
    compared = []
    for name, row in stats.items():
        stream = stats.get(f"Stream {name.removeprefix('Infer ')}")
        if not name.startswith("Infer split-") or stream is None:
            continue
        if int(stream["Request Count"]) < 3:
            continue
        whole, sent = float(row["Average Content Size"]), float(stream["Average Content Size"])
        assert sent < whole - 20, f"{name}: stream frames {sent:.0f} B, whole {whole:.0f} B"
        compared.append(name)
    assert compared, f"no split branch both streamed (≥ 3 frames) and sent unary: {answered}"
