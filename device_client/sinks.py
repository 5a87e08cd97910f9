"""Where outcomes go: JSON lines on stdout or in a file, or batched POSTs to an HTTP webhook.

`write` is called from several threads (pipeline, uplink reader, fallback worker) and must not
block the pipeline: the webhook queues outcomes for its own thread and, when the hook cannot keep
up, drops the oldest queued outcome and counts it (`dropped`) — the file and stdout sinks still
carry every record. Never imports torch.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import threading
from pathlib import Path
from typing import IO, Any, Protocol

import httpx

from device_client.config import FileSink, SinkConfig, StdoutSink, WebhookSink

log = logging.getLogger("splitedge.device.sinks")
Record = dict[str, Any]


class Sink(Protocol):
    def write(self, record: Record) -> None: ...

    def close(self) -> None:
        """Flush what is queued (bounded by the sink's timeout) and release the resource."""
        ...


class JsonLines:
    """One JSON object per line; flushed per record so a crash loses at most the current one."""

    def __init__(self, stream: IO[str], owned: bool) -> None:
        self._stream = stream
        self._owned = owned
        self._lock = threading.Lock()

    @classmethod
    def to_file(cls, path: Path) -> JsonLines:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path.open("a", encoding="utf-8"), owned=True)

    def write(self, record: Record) -> None:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            self._stream.flush()
            if self._owned:
                self._stream.close()


class Webhook:
    """POSTs `{"outcomes": [...]}` with up to `batch` records, at least every `flush_s`."""

    def __init__(self, config: WebhookSink) -> None:
        self.config = config
        self.dropped = 0
        self.failed_posts = 0
        self._queue: collections.deque[Record] = collections.deque()
        self._ready = threading.Condition()
        self._closing = False
        self._client = httpx.Client(timeout=config.timeout_s, headers=config.headers)
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def write(self, record: Record) -> None:
        with self._ready:
            if len(self._queue) >= self.config.queue:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(record)
            if len(self._queue) >= self.config.batch:
                self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout=self.config.timeout_s * 2)
        self._client.close()

    def _run(self) -> None:
        while True:
            with self._ready:
                if not self._closing and len(self._queue) < self.config.batch:
                    self._ready.wait(self.config.flush_s)
                batch = [
                    self._queue.popleft()
                    for _ in range(min(self.config.batch, len(self._queue)))
                ]
                closing = self._closing
            if batch:
                self._post(batch)
            if closing and not self._queue:
                return

    def _post(self, batch: list[Record]) -> None:
        try:
            response = self._client.post(self.config.url, json={"outcomes": batch})
            response.raise_for_status()
        except httpx.HTTPError as exc:
            # An outage of the hook must not stop the camera: count, log, go on.
            self.failed_posts += 1
            self.dropped += len(batch)
            log.warning("webhook %s: %s (%d outcomes lost)", self.config.url, exc, len(batch))


def open_sink(config: SinkConfig) -> Sink:
    if isinstance(config, StdoutSink):
        return JsonLines(sys.stdout, owned=False)
    if isinstance(config, FileSink):
        return JsonLines.to_file(config.path)
    return Webhook(config)


class Fanout:
    """Every record to every sink; one sink's failure does not starve the others."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def write(self, record: Record) -> None:
        for sink in self.sinks:
            try:
                sink.write(record)
            except OSError as exc:
                log.error("sink %s failed: %s", type(sink).__name__, exc)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
