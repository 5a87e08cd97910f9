"""Fixtures for the device tests: one small real bundle, real edge servers and real daemon
processes on loopback. Every process a test starts is stopped by the fixture that started it."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from splitedge.process import LifecycleError, SplitedgeProcess
from tests.bundles import Bundles

ROOT = Path(__file__).resolve().parents[2]
STARTUP_S = 90.0  # the edge imports torch and warms its tails; generous for a loaded 2-core box


@pytest.fixture(scope="session")
def bundle_dir(bundles: Bundles) -> Path:
    return bundles.tiny


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class EdgeProcess:
    """`splitedge serve` on loopback, on a fixed gRPC port so a restart comes back at the same
    address."""

    def __init__(
        self, bundle: Path, grpc_port: int, log: Path, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.bundle, self.grpc_port, self.log = bundle, grpc_port, log
        self.http_port = 0
        self.spawned = SplitedgeProcess(
            ["serve", "--bundle", bundle, "--grpc-port", grpc_port, "--http-port", "0",
             "--drain-seconds", "1", *extra_args],
            log,
        )

    def start(self) -> EdgeProcess:
        try:
            events = self.spawned.start().wait_for("ready", STARTUP_S)
        except LifecycleError as exc:
            raise AssertionError(f"edge failed to start:\n{self.spawned.log[-3000:]}") from exc
        self.http_port = int(events["listening"]["http_port"])
        return self

    def kill(self) -> None:
        self.spawned.kill()

    def stop(self) -> None:
        self.spawned.stop(15)


@pytest.fixture(scope="module")
def edge(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    log = tmp_path_factory.mktemp("edge") / "edge.log"
    server = EdgeProcess(bundle_dir, free_port(), log).start()
    try:
        yield server
    finally:
        server.stop()


class DaemonProcess:
    """`splitedge device run --config FILE` with its outcomes in a JSON-lines file."""

    def __init__(self, workdir: Path, config: dict[str, Any], env: dict[str, str] | None = None):
        self.workdir = workdir
        self.outcomes_path = workdir / "outcomes.jsonl"
        config = {"state_dir": str(workdir / "state"), **config}
        config.setdefault("sinks", [{"kind": "file", "path": str(self.outcomes_path)}])
        config.setdefault("metrics", {"port": 0})
        self.config_path = workdir / "device.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.spawned = SplitedgeProcess(
            ["device", "run", "--config", self.config_path], workdir / "device.log", env=env
        )

    @property
    def process(self) -> subprocess.Popen[str] | None:
        return self.spawned.popen

    def start(self) -> DaemonProcess:
        self.spawned.start()
        return self

    def wait_ready(self) -> dict[str, Any]:
        try:
            return self.spawned.wait_for("ready", STARTUP_S)["ready"]
        except LifecycleError as exc:
            raise AssertionError(self.log[-3000:]) from exc

    def wait_exit(self, timeout: float = 60) -> int:
        return self.spawned.wait(timeout)

    def terminate(self) -> None:
        self.spawned.terminate()

    def kill(self) -> None:
        self.spawned.kill()

    def outcomes(self) -> list[dict[str, Any]]:
        if not self.outcomes_path.exists():
            return []
        lines = self.outcomes_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def event(self, name: str) -> dict[str, Any] | None:
        return self.spawned.event(name)

    @property
    def log(self) -> str:
        return self.spawned.log


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def make(config: dict[str, Any], env: dict[str, str] | None = None) -> DaemonProcess:
        workdir = tmp_path / f"daemon{len(started)}"
        workdir.mkdir()
        daemon = DaemonProcess(workdir, config, env)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.kill()
