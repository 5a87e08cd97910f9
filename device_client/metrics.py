"""The device's Prometheus metrics, on their own registry (several pipelines can share a process
in tests without clashing). Served by `serve()` on the configured port. Never imports torch.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Per-stage device latency, 1 ms .. 5 s: a Pi's head sits near the top, a Jetson's near the bottom.
_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class DeviceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "splitedge_device_stage_seconds",
            "Device latency per stage "
            "(preprocess, prefilter, head, encode, uplink, local, track, total)",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.bytes_sent = Counter(
            "splitedge_device_bytes_sent", "Payload bytes sent to the edge", ["branch"], registry=r
        )
        self.outcomes = Counter(
            "splitedge_device_outcomes",
            "Frames by outcome kind (edge, local, tracked, prefiltered, dropped) and reason",
            ["kind", "reason"],
            registry=r,
        )
        self.branch = Gauge(
            "splitedge_device_branch", "1 for the branch the last frame took", ["branch"],
            registry=r,
        )
        self.uplink_up = Gauge(
            "splitedge_device_uplink_up", "1 while a stream to the edge is open", registry=r
        )
        self.reconnects = Counter(
            "splitedge_device_uplink_streams_opened", "Streams opened to the edge", registry=r
        )
        self.in_flight = Gauge(
            "splitedge_device_in_flight", "Frames sent and not yet finished", registry=r
        )
        self.late_replies = Counter(
            "splitedge_device_late_replies",
            "Replies that came after their frame's deadline had already settled it",
            registry=r,
        )
        # The adaptive scheduler's view (device_client/scheduler.py): what it believes, and
        # what it chose. Labels are the bundle's branch ids only.
        self.link_mbit = Gauge(
            "splitedge_device_link_throughput_mbit",
            "Estimated uplink throughput (Mbit/s, after the safety factor)",
            registry=r,
        )
        self.rtt_ms = Gauge(
            "splitedge_device_link_rtt_ms", "Estimated uplink round trip, high percentile (ms)",
            registry=r,
        )
        self.contention = Gauge(
            "splitedge_device_contention",
            "Device contention: measured ÷ profiled head latency (1 = unloaded)",
            registry=r,
        )
        self.edge_queue_ms = Gauge(
            "splitedge_device_edge_queue_ms",
            "The edge's queue wait as its replies report it, high percentile (ms)",
            registry=r,
        )
        self.decisions = Counter(
            "splitedge_device_scheduler_decisions",
            "Detections planned per branch (probes included; tracked frames not)",
            ["branch"],
            registry=r,
        )
        self.probes = Counter(
            "splitedge_device_scheduler_probes", "Frames sent on a larger branch to probe the link",
            registry=r,
        )
        self._branch_in_use: str | None = None

    def use_branch(self, branch_id: str) -> None:
        if branch_id != self._branch_in_use:
            if self._branch_in_use is not None:
                self.branch.labels(self._branch_in_use).set(0)
            self.branch.labels(branch_id).set(1)
            self._branch_in_use = branch_id


def serve(metrics: DeviceMetrics, host: str, port: int) -> tuple[WSGIServer, int]:
    """Start the /metrics endpoint in a thread; returns the server and its port (port 0 → free)."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server, int(server.server_port)
