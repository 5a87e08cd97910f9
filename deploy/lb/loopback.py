"""N `splitedge serve` replicas behind HAProxy on loopback: the scale-out setup without containers.

    python -m deploy.lb.loopback --replicas 3 --bundle bundles/demo-shapes
    # gRPC for devices at 127.0.0.1:50051, HTTP (bundles) at 127.0.0.1:8080, stats at :8404/stats

The balancer runs `deploy/lb/haproxy.cfg` itself, with each `server-template` line (DNS discovery,
for compose and Kubernetes) replaced by one `server` line per local replica; ports and the check
interval go in through the config's own env vars. The tests (tests/scaleout/) and the benchmark
(benchmarks/scaleout.py) drive the same classes: start, SIGTERM (drain), SIGKILL, restart a
replica at its old ports, read the balancer's view of each replica.

Needs the `haproxy` binary (Debian: `apt-get install haproxy`; `make test` installs it in CI).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from splitedge.process import LifecycleError, SplitedgeProcess

CONFIG = Path(__file__).with_name("haproxy.cfg")
ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("edge-grpc", "edge-http")
STARTUP_S = 120.0  # a replica imports torch and warms its tails; slow on a loaded 2-core box


def haproxy_binary() -> str | None:
    """The haproxy executable, or None (Debian puts it in /usr/sbin, often off a user's PATH)."""
    found = shutil.which("haproxy")
    if found:
        return found
    return "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Replica:
    """One `splitedge serve` process on fixed loopback ports, so a restart comes back where the
    balancer expects it; spawned and awaited by `splitedge.process.SplitedgeProcess`."""

    def __init__(
        self,
        name: str,
        bundles: Sequence[Path],
        workdir: Path,
        serve_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.bundles = list(bundles)
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.log = workdir / f"{name}.log"
        args: list[str | int | Path] = ["serve", "--host", "127.0.0.1"]
        for bundle in self.bundles:
            args += ["--bundle", bundle]
        args += ["--grpc-port", self.grpc_port, "--http-port", self.http_port, *serve_args]
        self.spawned = SplitedgeProcess(args, self.log, env=env)

    @property
    def process(self) -> subprocess.Popen[str] | None:
        return self.spawned.popen

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.spawned.events

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self.spawned.running

    def start(self) -> Replica:
        """Launch the process (returns at once; `wait_ready` blocks)."""
        self.spawned.start()
        return self

    def event(self, name: str) -> dict[str, Any] | None:
        return self.spawned.event(name)

    def wait_ready(self, timeout: float = STARTUP_S) -> Replica:
        try:
            self.spawned.wait_for("ready", timeout)
        except LifecycleError as exc:
            raise RuntimeError(f"replica {self.name} failed to start:\n{self.log_tail()}") from exc
        return self

    def terminate(self) -> None:
        """SIGTERM: the replica drains (readiness off, admitted frames answered) and exits."""
        self.spawned.terminate()

    def wait(self, timeout: float = 60) -> int:
        return self.spawned.wait(timeout)

    def stop(self, timeout: float = 60) -> None:
        self.spawned.stop(timeout)

    def kill(self) -> None:
        """SIGKILL: gone without a word, as a crashed pod or a pulled cable."""
        self.spawned.kill()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` on this replica's /metrics whose labels include `labels`."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{self.http_url}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def render_config(template: str, replicas: Sequence[Replica]) -> str:
    """haproxy.cfg with every `server-template` line swapped for one `server` line per replica,
    at its loopback ports (the gRPC backend checks each replica's own HTTP port)."""
    lines: list[str] = []
    backend = ""
    for line in template.splitlines():
        stripped = line.strip()
        if stripped.startswith("backend "):
            backend = stripped.split()[1]
        if not stripped.startswith("server-template "):
            lines.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        for replica in replicas:
            if backend == "edge-grpc":
                address = f"{replica.grpc_target} port {replica.http_port}"
            elif backend == "edge-http":
                address = f"127.0.0.1:{replica.http_port}"
            else:
                raise ValueError(f"server-template in unknown backend {backend!r}")
            lines.append(f"{indent}server {replica.name} {address}")
    return "\n".join(lines) + "\n"


class Balancer:
    """HAProxy with `deploy/lb/haproxy.cfg`, listening on loopback, in the foreground."""

    def __init__(
        self,
        replicas: Sequence[Replica],
        workdir: Path,
        check_interval: str = "1s",
        grpc_port: int = 0,
        http_port: int = 0,
        stats_port: int = 0,
    ) -> None:
        binary = haproxy_binary()
        if binary is None:
            raise FileNotFoundError(
                "haproxy is not installed: `apt-get install haproxy` (Debian/Ubuntu), "
                "`dnf install haproxy`, or `brew install haproxy`"
            )
        self.binary = binary
        self.replicas = list(replicas)
        self.workdir = workdir
        self.check_interval = check_interval
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.stats_port = stats_port or free_port()
        self.config = workdir / "haproxy.cfg"
        self.admin_socket = workdir / "haproxy-admin.sock"
        self.log = workdir / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.stats_port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "SPLITEDGE_LB_GRPC_BIND": self.grpc_target,
            "SPLITEDGE_LB_HTTP_BIND": f"127.0.0.1:{self.http_port}",
            "SPLITEDGE_LB_STATS_BIND": f"127.0.0.1:{self.stats_port}",
            "SPLITEDGE_LB_ADMIN_SOCKET": str(self.admin_socket),
            "SPLITEDGE_LB_CHECK_INTERVAL": self.check_interval,
        }

    def check(self) -> None:
        """`haproxy -c` on the rendered config: ValueError with HAProxy's message if invalid."""
        self._write_config()
        result = subprocess.run(
            [self.binary, "-c", "-f", str(self.config)],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise ValueError(f"haproxy rejects {self.config}:\n{result.stdout}{result.stderr}")

    def start(self) -> Balancer:
        self.check()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config)],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for(self._answers, 30, "haproxy to listen")
        return self

    def _write_config(self) -> None:
        self.config.write_text(render_config(CONFIG.read_text(), self.replicas))

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"haproxy exited:\n{self.log.read_text(errors='replace')}")
        try:
            self.stats()
        except OSError:
            return False
        return True

    def stats(self) -> list[dict[str, str]]:
        """HAProxy's stats CSV, one row per frontend/backend/server."""
        with urllib.request.urlopen(f"{self.stats_url}/stats;csv", timeout=5) as response:
            text = response.read().decode().lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def status(self, backend: str = "edge-grpc") -> dict[str, str]:
        """Each replica's state as the balancer sees it: UP, DOWN, MAINT, DRAIN, 'UP 1/2' …"""
        return {
            row["svname"]: row["status"]
            for row in self.stats()
            if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def sessions(self, backend: str = "edge-grpc") -> dict[str, int]:
        """Requests open on each replica now: on the gRPC backend, the device streams."""
        return {
            row["svname"]: int(row["scur"] or 0)
            for row in self.stats()
            if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_status(self, name: str, wanted: str, timeout: float = 60) -> None:
        wait_for(
            lambda: all(self.status(b).get(name) == wanted for b in BACKENDS),
            timeout,
            f"the balancer to see {name} {wanted}",
        )

    def admin(self, command: str) -> str:
        """One command on the runtime API (`help` lists them)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.admin_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def set_state(self, name: str, state: str) -> None:
        """`ready`, `drain` (no new streams; current ones stay) or `maint` (out of rotation)."""
        for backend in BACKENDS:
            answer = self.admin(f"set server {backend}/{name} state {state}").strip()
            if answer:
                raise RuntimeError(f"haproxy: set server {backend}/{name}: {answer}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class ScaleOut:
    """Replicas + balancer, started together, stopped together (a context manager)."""

    def __init__(
        self,
        bundles: Sequence[Path],
        replicas: int,
        workdir: Path,
        serve_args: Sequence[str] = (),
        check_interval: str = "1s",
        env: dict[str, str] | None = None,
        **ports: int,
    ) -> None:
        self.workdir = workdir
        self.replicas = [
            Replica(f"edge{i}", bundles, workdir, serve_args, env) for i in range(1, replicas + 1)
        ]
        self.balancer = Balancer(self.replicas, workdir, check_interval, **ports)

    def start(self) -> ScaleOut:
        try:
            for replica in self.replicas:  # all at once: their start-up overlaps
                replica.start()
            for replica in self.replicas:
                replica.wait_ready()
            self.balancer.start()
            for replica in self.replicas:
                self.balancer.wait_status(replica.name, "UP")
        except BaseException:
            self.close()
            raise
        return self

    def replica(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    def restart(self, replica: Replica) -> None:
        """Bring a stopped or killed replica back at its ports; return once the balancer has it
        back in rotation."""
        if replica.running:
            replica.stop()
        replica.start().wait_ready()
        self.balancer.wait_status(replica.name, "UP")

    def close(self) -> None:
        self.balancer.stop()
        for replica in self.replicas:
            replica.terminate()
        for replica in self.replicas:
            with contextlib.suppress(subprocess.TimeoutExpired):
                replica.stop()
            if replica.running:
                replica.kill()

    def __enter__(self) -> ScaleOut:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="splitedge-scaleout-") as scratch:
        yield Path(scratch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.lb.loopback",
        description="Run N `splitedge serve` replicas behind HAProxy on loopback until Ctrl-C. "
        "Arguments after `--` go to every `splitedge serve`.",
    )
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--bundle", type=Path, action="append", required=True)
    parser.add_argument("--grpc-port", type=int, default=50051, help="the balancer's gRPC port")
    parser.add_argument("--http-port", type=int, default=8080, help="the balancer's HTTP port")
    parser.add_argument("--stats-port", type=int, default=8404, help="HAProxy stats/metrics")
    parser.add_argument("--check-interval", default="1s", help="HAProxy health-check interval")
    parser.add_argument("--workdir", type=Path, help="config and logs (default: a temp dir)")
    args, serve_args = parser.parse_known_args(argv)
    serve_args = [a for a in serve_args if a != "--"]
    # SIGTERM ends the run as Ctrl-C does, during start-up too: replicas and balancer go down.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with _workdir(args.workdir) as workdir:
        fleet = ScaleOut(
            args.bundle,
            args.replicas,
            workdir,
            serve_args,
            args.check_interval,
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            stats_port=args.stats_port,
        )
        try:
            fleet.start()
            lb = fleet.balancer
            print(
                json.dumps(
                    {
                        "event": "ready",
                        "grpc": lb.grpc_target,
                        "http": lb.http_url,
                        "stats": f"{lb.stats_url}/stats",
                        "replicas": {
                            r.name: {"grpc": r.grpc_target, "http": r.http_url}
                            for r in fleet.replicas
                        },
                        "workdir": str(workdir),
                    }
                ),
                flush=True,
            )
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            fleet.close()
        print(json.dumps({"event": "stopped"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
