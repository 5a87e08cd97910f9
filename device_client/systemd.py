"""sd_notify without a dependency: READY, WATCHDOG and STOPPING to systemd's socket.

Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op. The watchdog is pinged from the
pipeline thread after each frame, so a stuck camera or a hung head gets the unit restarted;
`WatchdogSec=` in deploy/splitedge-device.service sets how long that may take.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time


class Notifier:
    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        self._address = address or None
        usec = os.environ.get("WATCHDOG_USEC", "")
        # Ping at twice the required rate, as sd_watchdog_enabled(3) advises.
        self._interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, state: str) -> None:
        if self._address is None:
            return
        # A vanished systemd is nothing the camera can act on: the send may fail quietly.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
            sock.sendto(state.encode(), self._address)

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        if self._interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self._interval:
            self._last_ping = now
            self.notify("WATCHDOG=1")
