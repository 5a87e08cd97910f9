"""Prometheus metrics of one edge runtime (its own registry, so several servers can share a
process in tests).

Label values come from fixed sets or from the loaded bundles' manifests, never from a client's
strings (a name the server does not hold is `unknown`): a scrape stays small however many
made-up names clients send."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
BYTES_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


@dataclass
class EdgeMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "splitedge_requests",
            "Frames answered, by outcome status",
            ["model", "branch", "status"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "splitedge_stage_seconds",
            "Server time per stage",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "splitedge_pending_frames", "Frames admitted and not yet answered", registry=r
        )
        self.batch_size = Histogram(
            "splitedge_batch_size",
            "Frames per tail call",
            ["model", "branch"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_released = Counter(
            "splitedge_batch_released",
            "Why each batch left the queue (full, delay, immediate)",
            ["reason"],
            registry=r,
        )
        self.computed = Counter(
            "splitedge_frames_computed",
            "Frames that went through a tail",
            ["model", "branch"],
            registry=r,
        )
        self.auth_refused = Counter(
            "splitedge_auth_refused",
            "Calls refused for a missing or wrong bearer token, by front door",
            ["door"],
            registry=r,
        )
        self.http_connections_refused = Counter(
            "splitedge_http_connections_refused",
            "HTTP connections closed by the server: over the limit, or headers too slow",
            ["reason"],
            registry=r,
        )
        self.payload_bytes = Histogram(
            "splitedge_payload_bytes",
            "Bytes of coded payload per frame",
            ["codec"],
            buckets=BYTES_BUCKETS,
            registry=r,
        )
