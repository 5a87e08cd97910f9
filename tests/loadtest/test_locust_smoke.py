"""CI smoke run of the locust users: a real edge (the shipped demo bundle) on loopback, a few
seconds of headless locust with every user class, real payloads. Fails on any failure that is
not load shedding (RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, a full camera window, HTTP 429/503)
and when a user class got no answer at all. Timings are printed, never asserted."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from loadtest.statuses import SHED_ERRORS

# Checked without importing: importing locust would monkey-patch this pytest process with gevent.
for _needed in ("locust", "torch"):  # torch: the edge process needs the edge extra
    if importlib.util.find_spec(_needed) is None:
        pytest.skip(f"{_needed} is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "demo-shapes"
USERS = ("CameraStream", "UnaryInfer", "HttpInfer", "BundleDownload")


def _events(stream: IO[str], until: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        if line.startswith("{"):
            event = json.loads(line)
            seen.append(event)
            if event["event"] == until:
                return {e["event"]: e for e in seen}
            if event["event"] == "failed":
                break
    raise AssertionError(f"the edge did not say {until!r}: {seen}")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    log = tmp_path_factory.mktemp("edge") / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "splitedge", "serve", "--bundle", str(BUNDLE),
             "--grpc-port", "0", "--http-port", "0", "--max-batch-size", "4"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        with process:  # closes the stdout pipe on the way out
            try:
                assert process.stdout is not None
                events = _events(process.stdout, "ready", timeout=180)
                yield events["listening"]
            finally:
                process.terminate()
                process.wait(timeout=30)


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
         "--cache-dir", str(tmp_path), "--frames", "2", "--fps", "5", "--sla-ms", "0",
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
