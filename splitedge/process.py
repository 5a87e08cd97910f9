"""Spawn `splitedge serve` or `splitedge device` and await its lifecycle events.

    edge = SplitedgeProcess(["serve", "--bundle", b, "--grpc-port", "0"], log=out / "edge.log")
    ports = edge.start().wait_for("ready")["listening"]      # every event so far, by name
    ...
    code = edge.stop()                                        # SIGTERM, wait, kill if stuck

The one way the demo, the benchmarks, the load tests and the tests run a splitedge process: its
stderr (log lines and the events of `shared.lifecycle`) is read on a thread into `log`, so no pipe
fills while nobody reads it; stdout goes to `stdout` (a file, or DEVNULL). With `stdout=PIPE` its
lines are read for events too: checkouts before `shared.lifecycle` announced the edge's events on
stdout, and `benchmarks/hostile.py --code-root` still runs those. Stdlib only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from shared.lifecycle import parse_event

ROOT = Path(__file__).resolve().parent.parent


class LifecycleError(RuntimeError):
    """The process failed, exited or timed out before the event awaited."""


class SplitedgeProcess:
    def __init__(
        self,
        args: Sequence[str | int | Path],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        stdout: IO[Any] | int | None = subprocess.DEVNULL,
        cwd: Path = ROOT,
        prefix: Sequence[str] = (),
    ) -> None:
        """`prefix` runs it inside something, e.g. `("ip", "netns", "exec", "dev0")`."""
        self.args = [str(a) for a in args]
        self.name = f"splitedge {self.args[0]}" if self.args else "splitedge"
        self.log_path = log
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.stdout = stdout
        self.cwd = cwd
        self.prefix = [str(p) for p in prefix]
        self.events: list[dict[str, Any]] = []
        self.popen: subprocess.Popen[str] | None = None
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None
        self._log_mode = "w"
        self._log_lock = threading.Lock()

    # -- life --------------------------------------------------------------------------------------
    def start(self) -> SplitedgeProcess:
        """Launch it (returns at once; `wait_for` blocks). A process started again (a restart)
        begins with no events."""
        self.events = []
        self._log_mode = "a" if self.popen is not None else "w"  # a restart keeps the first log
        self.popen = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "splitedge", *self.args],
            cwd=self.cwd,
            env=self.env,
            stdout=self.stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.popen.stderr is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.popen.stderr,), name=f"{self.name} stderr", daemon=True
        )
        self._reader.start()
        if self.popen.stdout is not None:  # stdout=PIPE: an older process's events
            threading.Thread(
                target=self._read, args=(self.popen.stdout,), name=f"{self.name} stdout",
                daemon=True,
            ).start()
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_for(self, event: str, timeout: float = 180) -> dict[str, dict[str, Any]]:
        """Block until `event` is announced; return every event so far by name. LifecycleError
        when the process announces `failed`, exits, or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                seen = {e["event"]: e for e in self.events if "event" in e}
                if event in seen:
                    return seen
                done = self._reader is None or not self._reader.is_alive()
                left = deadline - time.monotonic()
                if "failed" in seen or done or left <= 0:
                    why = "failed" if "failed" in seen else "exited" if done else "timed out"
                    raise LifecycleError(
                        f"{self.name} {why} before {event!r}: {self.events[-3:]}; "
                        f"see {self.log_path}"
                    )
                self._changed.wait(min(left, 0.5))

    def event(self, name: str) -> dict[str, Any] | None:
        with self._changed:
            return next((e for e in self.events if e.get("event") == name), None)

    def wait(self, timeout: float | None = None) -> int:
        """The exit code once it ended on its own (subprocess.TimeoutExpired past `timeout`)."""
        assert self.popen is not None
        code = self.popen.wait(timeout=timeout)
        self._join()
        return code

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (it drains and announces `stopped`), then SIGKILL past `timeout`."""
        if self.popen is None:
            return 0
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        self._join()
        return code

    def terminate(self) -> None:
        """SIGTERM without waiting."""
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self._join()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- reading -----------------------------------------------------------------------------------
    def _read(self, stream: IO[str]) -> None:
        with self._log_lock:
            mode, self._log_mode = self._log_mode, "a"  # the second reader appends
        with self.log_path.open(mode) as log:
            for line in stream:
                with self._log_lock:
                    log.write(line)
                    log.flush()
                record = parse_event(line)
                if record is not None:
                    with self._changed:
                        self.events.append(record)
                        self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _join(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self.popen is not None:
            for stream in (self.popen.stderr, self.popen.stdout):
                if stream is not None:
                    stream.close()
