"""How a splitedge process says where it is in its life: one JSON line per event, on stderr.

    {"event": "listening", "grpc_port": 50051, "http_port": 8080}     # the edge
    {"event": "ready", ...}  {"event": "draining", ...}  {"event": "stopped", ...}
    {"event": "failed", "error": "..."}

Both `splitedge serve` and `splitedge device` announce this way, on stderr between their log lines
(stdout is the device's outcome sink), each line written whole so no log line lands inside it.
`splitedge.process.SplitedgeProcess` spawns either and awaits these events. Stdlib only.
"""

from __future__ import annotations

import json
import sys
from typing import Any

EVENT_PREFIX = '{"event": '  # json.dumps of a dict whose first key is "event"


def announce(event: str, **fields: Any) -> None:
    """One lifecycle event, as one line on stderr."""
    # One write for the line and its newline: another thread's log line must not land between.
    sys.stderr.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stderr.flush()


def parse_event(line: str) -> dict[str, Any] | None:
    """The event a line announces, or None for any other line (a log line, say)."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None
