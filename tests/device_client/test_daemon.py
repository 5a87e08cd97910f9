"""The daemon as a user runs it: a real `splitedge device run` process against a real edge server
on loopback, on the generated stream. No mocks: gRPC, HTTP, ONNX and the codecs are the real ones.
"""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from device_client.head import HeadRunner
from device_client.sources import ShapesGenerator
from shared.messages import FrameRequest, infer_request, wire_bytes
from shared.wire import pb, pb_grpc
from tests.device_client.bundle_factory import scene
from tests.device_client.conftest import DaemonProcess, EdgeProcess, free_port, wait_for
from tests.tls import self_signed

FRAMES = 30


def one_outcome_per_frame(outcomes: list[dict[str, Any]], frames: int) -> None:
    ids = Counter(o["frame_id"] for o in outcomes)
    assert sorted(ids) == list(range(frames)), f"missing or extra frames: {sorted(ids)}"
    doubled = [i for i, n in ids.items() if n > 1]
    assert not doubled, f"frames with more than one outcome: {doubled}"


def reference_reply(
    runner: HeadRunner, channel: grpc.Channel, frame: Any, frame_id: int
) -> tuple[pb.InferResponse, int, int]:
    """What the edge answers for this frame when the head runs in this process."""
    out = runner.run(frame)
    assert out.payload is not None
    payload, geometry = out.payload, out.head_input.geometry
    about = FrameRequest("tiny", branch_id="split-w100", stream_id="reference",
                         frame_id=frame_id, original_size=geometry.original)
    request = infer_request(about, latent=payload, input_size=geometry.input_size)
    reply = pb_grpc.SplitInferenceStub(channel).Infer(request, timeout=30)
    # What the frame costs sent whole as the daemon would: its stream, version, times.
    request.stream_id, request.model_version = "cam-ref", "1"
    request.capture_time_unix_ns = time.time_ns()
    request.deadline_unix_ns = request.capture_time_unix_ns + 10_000_000_000
    return reply, payload.nbytes, wire_bytes(request)


def test_generated_stream_every_frame_accounted_and_matching_reference(
    edge: EdgeProcess, bundle_dir: Path, daemons: Callable[..., DaemonProcess]
) -> None:
    daemon = daemons(
        {
            "device_id": "cam-ref",
            # Fetched from the edge's HTTP API, verified and cached, as a device would.
            "bundle": {"url": f"http://127.0.0.1:{edge.http_port}", "name": "tiny"},
            "source": scene(frames=FRAMES, fps=30.0).model_dump(mode="json"),
            # One frame in flight: every tail batch holds one frame, as the reference's does.
            "edge": {"target": f"127.0.0.1:{edge.grpc_port}", "window": 1, "sla_ms": 10000},
            "pipeline": {"branch": "split-w100"},
        }
    ).start()
    assert daemon.wait_exit() == 0, daemon.log
    outcomes = daemon.outcomes()
    one_outcome_per_frame(outcomes, FRAMES)

    stopped = daemon.event("stopped")
    assert stopped is not None, daemon.log
    assert stopped["frames"] == stopped["settled"] == FRAMES
    assert stopped["forbidden_modules"] == [], "the daemon process imported torch"
    assert Path(daemon.event("ready")["bundle_dir"]).is_relative_to(daemon.workdir / "state")  # type: ignore[index]

    generator = ShapesGenerator(scene())
    runner = HeadRunner.load(bundle_dir, threads=1)
    by_id = {o["frame_id"]: o for o in outcomes}
    lean_frames = 0
    with grpc.insecure_channel(f"127.0.0.1:{edge.grpc_port}") as channel:
        for frame_id in range(FRAMES):
            outcome = by_id[frame_id]
            if not generator.has_objects(frame_id):
                # prefilter: an empty frame is skipped, counted, and costs no bytes
                assert outcome["kind"] == "prefiltered", outcome
                assert outcome["bytes_sent"] == 0
                continue
            assert outcome["kind"] == "edge", outcome
            assert outcome["branch"] == "split-w100"
            assert {"preprocess", "prefilter", "head", "encode", "uplink", "total"} <= set(
                outcome["timings_ms"]
            )
            assert "tail" in outcome["server_ms"]
            reply, payload_bytes, whole_bytes = reference_reply(
                runner, channel, generator.frame(frame_id), frame_id
            )
            assert reply.status.code == pb.FRAME_OK
            assert outcome["bytes_sent"] > payload_bytes  # the payload plus the request's fields
            # Compact lean frames (the edge announces them) leave out the stream's settings
            # (names, sizes), the latent's codec and shape and the absolute times: > 60 bytes
            # here, where plain lean frames save ~55; and still get the same answer.
            assert outcome["bytes_sent"] <= whole_bytes + 2  # varints of the times may differ
            lean_frames += outcome["bytes_sent"] < whole_bytes - 60
            got = [(d["label_id"], d["score"], d["box"]) for d in outcome["detections"]]
            want = [
                (d.label_id, d.score, [d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max])
                for d in reply.detections
            ]
            assert len(got) == len(want), frame_id
            for (label, score, box), (want_label, want_score, want_box) in zip(
                got, want, strict=True
            ):
                assert label == want_label
                assert score == pytest.approx(want_score, abs=1e-4)
                assert box == pytest.approx(want_box, abs=1e-2)

    kinds = Counter(o["kind"] for o in outcomes)
    empty = sum(not generator.has_objects(i) for i in range(FRAMES))
    assert lean_frames >= (FRAMES - empty) - 2, "the stream's frames after the first go lean"
    assert kinds == {"prefiltered": empty, "edge": FRAMES - empty}
    assert stopped["outcomes"] == dict(kinds)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_edge_killed_mid_stream_falls_back_to_local_and_resumes(
    bundle_dir: Path, daemons: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    edge = EdgeProcess(bundle_dir, free_port(), tmp_path / "edge.log").start()
    try:
        daemon = daemons(
            {
                "device_id": "cam-kill",
                "bundle": {"path": str(bundle_dir)},
                "source": scene(fps=15.0, live=True).model_dump(mode="json"),
                "edge": {
                    "target": f"127.0.0.1:{edge.grpc_port}",
                    "sla_ms": 2000,
                    "connect_timeout_s": 0.5,
                    "backoff": {"initial_s": 0.1, "max_s": 0.5},
                },
                "pipeline": {"prefilter": {"enabled": False}, "on_edge_failure": "fallback"},
            }
        ).start()
        ready = daemon.wait_ready()

        def count(kind: str, after: int = -1) -> int:
            return sum(o["kind"] == kind and o["frame_id"] > after for o in daemon.outcomes())

        wait_for(lambda: count("edge") >= 5, 60, "edge results")
        edge.kill()
        wait_for(lambda: count("local") >= 5, 60, "local fallback results")
        last_local = max(o["frame_id"] for o in daemon.outcomes() if o["kind"] == "local")
        metrics = scrape(ready["metrics_port"])
        assert 'splitedge_device_outcomes_total{kind="local",reason="edge_unavailable"}' in metrics
        assert 'splitedge_device_branch{branch="split-w100"} 1.0' in metrics
        assert "splitedge_device_uplink_up 0.0" in metrics

        edge.start()  # the same gRPC port: the daemon's backoff finds it again
        wait_for(lambda: count("edge", after=last_local) >= 5, 90, "edge results after restart")
        metrics = scrape(ready["metrics_port"])
        assert "splitedge_device_uplink_up 1.0" in metrics
        assert 'splitedge_device_stage_seconds_count{stage="head"}' in metrics
        daemon.terminate()
        assert daemon.wait_exit() == 0, daemon.log
    finally:
        edge.stop()

    outcomes = daemon.outcomes()
    stopped = daemon.event("stopped")
    assert stopped is not None, daemon.log
    one_outcome_per_frame(outcomes, stopped["frames"])
    assert stopped["settled"] == stopped["frames"]
    assert stopped["forbidden_modules"] == []
    assert stopped["reconnects"] >= 1
    kinds = [o["kind"] for o in sorted(outcomes, key=lambda o: o["frame_id"])]
    first_local, resumed = kinds.index("local"), kinds.index("edge", last_local + 1)
    assert "edge" in kinds[:first_local] and resumed > first_local
    for outcome in outcomes:
        if outcome["kind"] == "local":
            assert outcome["reason"] in ("edge_unavailable", "deadline_missed"), outcome
            assert "local" in outcome["timings_ms"]
            assert outcome["detections"], "local.onnx of the tiny detector always finds boxes"
        elif outcome["kind"] == "dropped":
            # A live source drops its oldest frame when the pipeline falls behind; on stop the
            # frames still queued are dropped: each has its reason.
            assert outcome["reason"] in ("behind", "shutdown"), outcome


def test_drop_mode_without_an_edge_drops_every_frame_with_a_reason(
    bundle_dir: Path, daemons: Callable[..., DaemonProcess]
) -> None:
    daemon = daemons(
        {
            "bundle": {"path": str(bundle_dir)},
            "source": scene(frames=8, fps=100.0).model_dump(mode="json"),
            "edge": {"target": f"127.0.0.1:{free_port()}", "connect_timeout_s": 0.2},
            "pipeline": {"prefilter": {"enabled": False}, "on_edge_failure": "drop"},
        }
    ).start()
    assert daemon.wait_exit() == 0, daemon.log
    outcomes = daemon.outcomes()
    one_outcome_per_frame(outcomes, 8)
    assert {(o["kind"], o["reason"]) for o in outcomes} == {("dropped", "edge_unavailable")}
    assert daemon.event("stopped")["forbidden_modules"] == []  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "env", "message"),
    [
        ({"pipeline": {"brnch": "split-w100"}}, {}, "pipeline.brnch: unknown key"),
        ({"edge": {"window": 0}}, {}, "edge.window: Input should be greater than or equal to 1"),
        ({}, {"SPLITEDGE_DEVICE_EDGE__SLA_MS": "soon"}, "edge.sla_ms"),
        ({"source": {"kind": "webcam"}}, {}, "source"),
        ({"pipeline": {"branch": "split-w999"}}, {}, "split-w050"),  # names what exists
    ],
)
def test_bad_config_is_refused_at_start_up(
    bundle_dir: Path,
    daemons: Callable[..., DaemonProcess],
    change: dict[str, Any],
    env: dict[str, str],
    message: str,
) -> None:
    config: dict[str, Any] = {
        "bundle": {"path": str(bundle_dir)},
        "source": {"kind": "generated", "frames": 1},
        **change,
    }
    daemon = daemons(config, env).start()
    assert daemon.wait_exit() == 2, daemon.log
    assert message in daemon.log
    failed = daemon.event("failed")
    assert failed is not None and failed["kind"] == "config"
    assert not daemon.outcomes()


def test_daemon_over_tls_with_a_bearer_token(
    bundle_dir: Path, daemons: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    (tmp_path / "token").write_text("tok-123\n")
    edge = EdgeProcess(
        bundle_dir,
        free_port(),
        tmp_path / "edge.log",
        ("--tls-cert", str(cert), "--tls-key", str(key), "--tokens", '["tok-123"]'),
    ).start()
    try:

        def config(token_file: Path) -> dict[str, Any]:
            return {
                "bundle": {"path": str(bundle_dir)},
                "source": scene(frames=6, fps=30.0).model_dump(mode="json"),
                "edge": {
                    "target": f"127.0.0.1:{edge.grpc_port}",
                    "token_file": str(token_file),
                    "tls": {"ca_file": str(cert)},
                    "sla_ms": 10000,
                    "connect_timeout_s": 2,
                    "backoff": {"initial_s": 0.1, "max_s": 0.2},
                },
                "pipeline": {"prefilter": {"enabled": False}, "on_edge_failure": "drop"},
            }

        good = daemons(config(tmp_path / "token")).start()
        assert good.wait_exit() == 0, good.log
        kinds = Counter(o["kind"] for o in good.outcomes())
        assert kinds == {"edge": 6}, good.log

        (tmp_path / "wrong").write_text("nope\n")
        wrong = daemons(config(tmp_path / "wrong")).start()
        assert wrong.wait_exit() == 0, wrong.log
        outcomes = wrong.outcomes()
        one_outcome_per_frame(outcomes, 6)
        assert all(o["kind"] == "dropped" for o in outcomes), outcomes
    finally:
        edge.stop()
