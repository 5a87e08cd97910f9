"""Sinks against real endpoints: the webhook POSTs every outcome in batches to a loopback HTTP
server, survives the hook being down, and a JSON-lines file holds one line per outcome."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from device_client.config import WebhookSink
from device_client.sinks import JsonLines, Webhook


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []
    headers_seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        Hook.headers_seen.append(self.headers.get("Authorization", ""))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook():
    Hook.received, Hook.headers_seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_webhook_posts_every_outcome_in_batches(hook) -> None:
    sink = Webhook(
        WebhookSink(
            kind="webhook", url=hook, batch=4, flush_s=0.05, headers={"Authorization": "Bearer t"}
        )
    )
    for frame_id in range(10):
        sink.write({"frame_id": frame_id, "kind": "edge"})
    sink.close()
    ids = [o["frame_id"] for post in Hook.received for o in post["outcomes"]]
    assert ids == list(range(10))
    assert all(len(post["outcomes"]) <= 4 for post in Hook.received)
    assert set(Hook.headers_seen) == {"Bearer t"}
    assert sink.dropped == 0 and sink.failed_posts == 0


def test_webhook_down_counts_losses_and_never_blocks() -> None:
    sink = Webhook(
        WebhookSink(
            kind="webhook", url="http://127.0.0.1:9/none", batch=2, flush_s=0.05, timeout_s=0.5
        )
    )
    for frame_id in range(4):
        sink.write({"frame_id": frame_id})
    sink.close()
    assert sink.failed_posts >= 1 and sink.dropped == 4


def test_file_sink_writes_one_json_line_per_outcome(tmp_path: Path) -> None:
    sink = JsonLines.to_file(tmp_path / "outcomes.jsonl")
    for frame_id in range(3):
        sink.write({"frame_id": frame_id})
    sink.close()
    lines = (tmp_path / "outcomes.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame_id"] for line in lines] == [0, 1, 2]
