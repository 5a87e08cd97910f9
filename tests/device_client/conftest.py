"""Fixtures for the device tests: one small real bundle, real edge servers and real daemon
processes on loopback. Every process a test starts is stopped by the fixture that started it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.device_client.bundle_factory import make_tiny_bundle

ROOT = Path(__file__).resolve().parents[2]
STARTUP_S = 90.0  # the edge imports torch and warms its tails; generous for a loaded 2-core box


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


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


def _close(process: subprocess.Popen[str]) -> None:
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


class JsonLinesReader:
    """Reads a process stream on a thread; keeps the JSON objects and the raw text."""

    def __init__(self, stream: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.text: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.text.append(line)
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    self.events.append(json.loads(line))

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") == name), None)

    def join(self) -> None:
        self._thread.join(timeout=10)


class EdgeProcess:
    """`splitedge serve` on loopback, on a fixed gRPC port so a restart comes back at the same
    address."""

    def __init__(
        self, bundle: Path, grpc_port: int, log: Path, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.bundle, self.grpc_port, self.log = bundle, grpc_port, log
        self.extra_args = extra_args
        self.http_port = 0
        self.process: subprocess.Popen[str] | None = None
        self._reader: JsonLinesReader | None = None

    def start(self) -> EdgeProcess:
        command = [
            sys.executable,
            "-m",
            "splitedge",
            "serve",
            "--bundle",
            str(self.bundle),
            "--grpc-port",
            str(self.grpc_port),
            "--http-port",
            "0",
            "--drain-seconds",
            "1",
            *self.extra_args,
        ]
        with self.log.open("a") as err:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True
            )
        assert self.process.stdout is not None
        reader = self._reader = JsonLinesReader(self.process.stdout)
        wait_for(
            lambda: reader.event("ready") is not None or self.process.poll() is not None,  # type: ignore[union-attr]
            STARTUP_S,
            "the edge server to be ready",
        )
        if reader.event("ready") is None:
            raise AssertionError(f"edge failed to start:\n{self.log.read_text()[-3000:]}")
        listening = reader.event("listening")
        assert listening is not None
        self.http_port = int(listening["http_port"])
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._release()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._release()

    def _release(self) -> None:
        if self.process is not None and self._reader is not None:
            self._reader.join()
            _close(self.process)


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
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.stderr: JsonLinesReader | None = None

    def start(self) -> DaemonProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "splitedge", "device", "run", "--config", str(self.config_path)],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr = JsonLinesReader(self.process.stderr)
        return self

    def wait_ready(self) -> dict[str, Any]:
        assert self.stderr is not None and self.process is not None
        wait_for(
            lambda: self.stderr.event("ready") is not None or self.process.poll() is not None,  # type: ignore[union-attr]
            STARTUP_S,
            "the daemon to be ready",
        )
        ready = self.stderr.event("ready")
        assert ready is not None, "".join(self.stderr.text)[-3000:]
        return ready

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.process is not None and self.stderr is not None
        code = self.process.wait(timeout=timeout)
        self.stderr.join()
        _close(self.process)
        return code

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process is not None:
            if self.stderr is not None:
                self.stderr.join()
            _close(self.process)

    def outcomes(self) -> list[dict[str, Any]]:
        if not self.outcomes_path.exists():
            return []
        lines = self.outcomes_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def event(self, name: str) -> dict[str, Any] | None:
        assert self.stderr is not None
        return self.stderr.event(name)

    @property
    def log(self) -> str:
        return "".join(self.stderr.text) if self.stderr is not None else ""


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
