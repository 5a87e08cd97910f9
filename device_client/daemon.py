"""`splitedge device run --config device.yaml`: the device daemon's process.

Start-up builds everything once — settings, bundle (downloaded and verified, or local), head and
local sessions, branch policy, sinks, uplink, metrics endpoint, source — and refuses to start with
a clear message when any of it is wrong (exit 2 for the config, 1 for the rest). Then frames flow
until the source ends or SIGTERM/SIGINT; in-flight frames finish (by their deadline at the
latest), every frame's outcome is written, and the process exits.

Lifecycle events go to stderr as JSON lines (`starting`, `ready`, `failed`, `stopped`); outcomes
go to the sinks (stdout by default), so the two never mix. `stopped` lists any torch module in
`sys.modules` (it must be empty: the device installs without torch).

Never imports torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from device_client.bundles import BundleStore
from device_client.config import DeviceSettings, load_settings
from device_client.grpc_uplink import GrpcUplink
from device_client.head import HeadRunner
from device_client.local import LocalRunner
from device_client.metrics import DeviceMetrics, serve
from device_client.pipeline import Pipeline
from device_client.policy import BranchPolicy, FixedBranch
from device_client.preprocess import Image
from device_client.scheduler import AdaptivePolicy
from device_client.sinks import Fanout, open_sink
from device_client.sources import open_source
from device_client.systemd import Notifier
from device_client.tracker import BoxTracker
from shared.bundle import Bundle, Manifest
from shared.errors import ConfigError, SplitEdgeError
from shared.lifecycle import announce

log = logging.getLogger("splitedge.device")
FORBIDDEN = ("torch", "torchvision", "compressai")


def forbidden_modules() -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)


def build_runners(
    bundle: Bundle, settings: DeviceSettings
) -> tuple[HeadRunner, LocalRunner | None]:
    config = settings.pipeline
    available = ort.get_available_providers()
    missing = [p for p in config.providers if p not in available]
    if missing:
        raise ConfigError(
            f"pipeline.providers {missing} are not in this onnxruntime build (it has "
            f"{available}); install the onnxruntime build for this device (see deploy/README.md) "
            "or use CPUExecutionProvider"
        )
    head = HeadRunner(bundle, config.threads, config.providers, config.prefilter.regions)
    local = (
        LocalRunner(bundle, config.threads, config.providers)
        if bundle.manifest.local_files
        else None
    )
    return head, local


def _sample_frame() -> Image:
    """A benchmark scene (procedural, the same on every device) to time the image codecs on: an
    empty frame compresses unlike a camera's."""
    from device_client.scenes import SceneConfig, render_scene

    return render_scene(np.random.default_rng(0), SceneConfig()).image


def run(settings: DeviceSettings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    notifier = Notifier()
    announce("starting", pid=os.getpid(), device_id=settings.device_id)
    metrics = DeviceMetrics()
    token = settings.edge.bearer_token()
    bundle = BundleStore(settings.state_dir, settings.bundle, token).resolve()
    head, local = build_runners(bundle, settings)
    head_ms = head.warm_up()
    local_ms = local.warm_up() if local is not None else None
    policy = make_policy(bundle.manifest, settings, metrics)
    sink = Fanout([open_sink(c) for c in settings.sinks])
    uplink = GrpcUplink(
        settings.edge,
        token,
        on_state=lambda up: _uplink_state(metrics, up),
    )
    pipeline = Pipeline(
        manifest=bundle.manifest,
        head=head,
        local=local,
        uplink=uplink,
        policy=policy,
        sink=sink,
        metrics=metrics,
        config=settings.pipeline,
        edge=settings.edge,
        stream_id=settings.device_id,
        tracker=BoxTracker() if isinstance(policy, AdaptivePolicy) else None,
    )
    if isinstance(policy, AdaptivePolicy):
        image_ms = pipeline.stages.warm_up_images(_sample_frame())
        policy.calibrate(head_ms, local_ms, head.warm_overhead_ms, image_ms)
    source = open_source(settings.source, settings.pipeline.queue, pipeline.on_source_drop)
    metrics_port = None
    if settings.metrics.enabled:
        _server, metrics_port = serve(metrics, settings.metrics.host, settings.metrics.port)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        notifier.stopping()
        pipeline.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    uplink.start()
    # Give the first connection a moment so the first frames do not all fall back; the daemon
    # starts either way (the edge may come later).
    uplink.wait_available(settings.edge.connect_timeout_s)
    announce(
        "ready",
        bundle=f"{bundle.manifest.name}:{bundle.manifest.version}",
        bundle_dir=str(bundle.root),
        policy=settings.pipeline.policy,
        branch=_first_branch(policy),
        metrics_port=metrics_port,
        edge_up=uplink.available,
        providers=list(settings.pipeline.providers),
    )
    notifier.ready(f"{settings.pipeline.policy} policy, branch {_first_branch(policy)}")
    started = time.monotonic()
    try:
        tally = pipeline.run(source, on_frame=notifier.watchdog)
    finally:
        uplink.close()
        sink.close()
    announce(
        "stopped",
        seconds=round(time.monotonic() - started, 3),
        frames=tally.seen,
        settled=tally.settled,
        outcomes=dict(tally.outcomes),
        reasons=dict(tally.reasons),
        late_replies=tally.late_replies,
        reconnects=uplink.reconnects,
        forbidden_modules=forbidden_modules(),
    )
    return 0


# Planned for when neither scheduler.fps nor the source says (cameras may not know their rate).
DEFAULT_FPS = 15.0


def make_policy(
    manifest: Manifest, settings: DeviceSettings, metrics: DeviceMetrics | None = None
) -> BranchPolicy:
    """The configured policy; ConfigError (exit 2) for one that cannot run on this bundle."""
    config = settings.pipeline
    if config.policy == "fixed":
        return FixedBranch.from_manifest(manifest, config.branch)
    fps = config.scheduler.fps or getattr(settings.source, "fps", None) or DEFAULT_FPS
    return AdaptivePolicy(manifest, config.scheduler, settings.edge.sla_ms, fps, metrics)


def _first_branch(policy: BranchPolicy) -> str:
    if isinstance(policy, FixedBranch):
        return policy.branch.id
    assert isinstance(policy, AdaptivePolicy)
    return "adaptive: " + ", ".join(b.id for b in policy.branches)


def _uplink_state(metrics: DeviceMetrics, up: bool) -> None:
    metrics.uplink_up.set(1 if up else 0)
    if up:
        metrics.reconnects.inc()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="splitedge device",
        description="The device daemon: capture → prefilter → head → encode → stream → results. "
        "Every config key can be overridden by an env var SPLITEDGE_DEVICE_<SECTION>__<KEY>.",
    )
    parser.add_argument("command", choices=("run", "check"), help="run the daemon / check config")
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("SPLITEDGE_DEVICE_CONFIG"),
        help="YAML config (env SPLITEDGE_DEVICE_CONFIG)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        if args.command == "check":
            bundle = BundleStore(
                settings.state_dir, settings.bundle, settings.edge.bearer_token()
            ).resolve()
            policy = make_policy(bundle.manifest, settings)
            print(
                json.dumps(
                    {
                        "config": settings.model_dump(mode="json"),
                        "bundle": f"{bundle.manifest.name}:{bundle.manifest.version}",
                        "branch": _first_branch(policy),
                    },
                    indent=2,
                )
            )
            return 0
        return run(settings)
    except ConfigError as exc:
        announce("failed", error=str(exc), kind="config")
        print(f"splitedge device: invalid configuration\n{exc}", file=sys.stderr)
        return 2
    except SplitEdgeError as exc:
        announce("failed", error=str(exc), kind=type(exc).__name__)
        print(f"splitedge device: {exc}", file=sys.stderr)
        return 1
