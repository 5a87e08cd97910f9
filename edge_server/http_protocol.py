"""uvicorn's h11 protocol with the limits a public port needs: a connection cap and a deadline
for request headers.

uvicorn bounds idle keep-alive connections but not a connection that never finishes its headers:
20,000 clients that connect and send nothing (or one byte a second) hold 20,000 file
descriptors until the process runs out and every accept() fails. Here a connection over
`max_connections` is closed as soon as it is accepted, and one whose request headers have not
all arrived `header_timeout_s` after it opened (or after its previous response) is closed.
Bodies are the app's business (edge_server/http_api.py answers 408 to a slow one).
"""

from __future__ import annotations

import asyncio

from prometheus_client import Counter
from uvicorn.protocols.http.h11_impl import H11Protocol


def limited_protocol(
    *, max_connections: int, header_timeout_s: float, refused: Counter
) -> type[H11Protocol]:
    """An H11Protocol class with these limits, for `uvicorn.Config(http=...)`."""

    class LimitedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                refused.labels("limit").inc()
                transport.abort()  # no lingering close: the descriptor is what is scarce
                return
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()  # the next request on this connection gets the same time

        def _arm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _headers_too_slow(self) -> None:
            # A request whose headers arrived has a cycle that is not complete: leave it alone.
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                refused.labels("header_timeout").inc()
                self.transport.abort()

    return LimitedH11Protocol
