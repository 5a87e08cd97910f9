"""Sources (generated stream, live buffer, folder, video), config loading, and reconnect backoff."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from device_client.config import EdgeConfig, FolderSource, GeneratedSource, load_settings
from device_client.grpc_uplink import backoff_delay
from device_client.sources import (
    Frame,
    LiveBuffer,
    ShapesGenerator,
    open_source,
)
from shared.errors import ConfigError, SourceError

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stream_is_deterministic_by_seed() -> None:
    config = GeneratedSource(kind="generated", seed=3, empty_run=2, object_run=3)
    a, b = ShapesGenerator(config), ShapesGenerator(config)
    other = ShapesGenerator(config.model_copy(update={"seed": 4}))
    assert all(np.array_equal(a.frame(i), b.frame(i)) for i in (0, 4, 17))
    assert not np.array_equal(a.frame(1), other.frame(1))
    assert [a.has_objects(i) for i in range(6)] == [True, True, True, False, False, True]
    assert np.array_equal(a.frame(3), a.background)  # an empty frame is the background only
    assert not np.array_equal(a.frame(0), a.background)


def test_live_buffer_drops_the_oldest_and_reports_each_drop() -> None:
    dropped: list[tuple[int, str]] = []
    buffer = LiveBuffer(2, lambda frame, reason: dropped.append((frame.frame_id, reason)))
    for i in range(5):
        buffer.put(Frame(i, np.zeros((2, 2, 3), np.uint8), 0, 0.0))
    assert dropped == [(0, "behind"), (1, "behind"), (2, "behind")]
    assert buffer.dropped == 3
    assert [buffer.get(0).frame_id, buffer.get(0).frame_id] == [3, 4]  # type: ignore[union-attr]
    buffer.finish()
    assert buffer.get(0) is None


@pytest.mark.parametrize("kind", ["generated", "folder"])
def test_a_slow_consumer_of_a_live_source_loses_no_frame_from_the_books(
    kind: str, tmp_path: Path
) -> None:
    lock = threading.Lock()
    dropped: list[int] = []

    def on_drop(frame: Frame, reason: str) -> None:
        with lock:
            dropped.append(frame.frame_id)

    config: GeneratedSource | FolderSource
    config = GeneratedSource(kind="generated", fps=200, frames=40, live=True, width=32, height=32)
    if kind == "folder":  # the same frames as files, read at the camera's rate (benchmarks do)
        generator = ShapesGenerator(config)
        for i in range(40):
            cv2.imwrite(str(tmp_path / f"{i:03d}.png"), generator.frame(i))
        config = FolderSource(kind="folder", path=tmp_path, pattern="*.png", fps=200, live=True)
    source = open_source(config, 2, on_drop)
    seen = []
    for frame in source:
        seen.append(frame.frame_id)
        time.sleep(0.02)  # slower than the camera
    assert dropped, "the consumer was slower: something must have been dropped"
    assert sorted(seen + dropped) == list(range(40))
    assert seen == sorted(seen)  # the newest frames, in order


def test_closing_a_live_source_accounts_for_the_frames_still_queued() -> None:
    dropped: list[str] = []
    config = GeneratedSource(kind="generated", fps=500, live=True, width=32, height=32)
    source = open_source(config, 4, lambda frame, reason: dropped.append(reason))
    for seen, _frame in enumerate(source, start=1):
        if seen == 3:
            time.sleep(0.05)
            source.close()
    assert "shutdown" in dropped


def test_folder_and_video_sources_read_rgb(tmp_path: Path) -> None:
    frame = ShapesGenerator(GeneratedSource(kind="generated", width=64, height=48)).frame(0)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    folder = open_source(
        load_settings(
            None, bundle={"path": "x"}, source={"kind": "folder", "path": str(tmp_path)}
        ).source,
        2,
        lambda f, r: None,
    )
    frames = list(folder)
    assert [f.frame_id for f in frames] == [0, 1, 2]
    assert np.array_equal(frames[0].image, frame)  # PNG is lossless: RGB came back as RGB

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(4):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    settings = load_settings(
        None, bundle={"path": "x"}, source={"kind": "video", "path": str(video)}
    )
    frames = list(open_source(settings.source, 2, lambda f, r: None))
    assert len(frames) == 4 and frames[0].image.shape == (48, 64, 3)


def test_missing_sources_say_what_is_wrong(tmp_path: Path) -> None:
    settings = load_settings(
        None, bundle={"path": "x"}, source={"kind": "folder", "path": str(tmp_path / "nope")}
    )
    with pytest.raises(SourceError, match="not a directory"):
        open_source(settings.source, 2, lambda f, r: None)
    settings = load_settings(
        None, bundle={"path": "x"}, source={"kind": "camera", "uri": str(tmp_path / "cam.mjpg")}
    )
    with pytest.raises(SourceError, match="cannot open video source"):
        open_source(settings.source, 2, lambda f, r: None)


def test_env_vars_override_the_file_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "device.yaml"
    path.write_text("bundle: {path: /b}\nsource: {kind: generated, fps: 5}\nedge: {window: 3}\n")
    monkeypatch.setenv("SPLITEDGE_DEVICE_EDGE__SLA_MS", "250")
    monkeypatch.setenv("SPLITEDGE_DEVICE_SOURCE__FPS", "12.5")
    settings = load_settings(path)
    assert settings.edge.sla_ms == 250 and settings.edge.window == 3  # env + file, merged
    assert settings.source.fps == 12.5  # type: ignore[union-attr]


def test_config_errors_name_every_bad_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "device.yaml"
    path.write_text("bundle: {path: /b, url: http://x}\nsource: {kind: generated}\nsinks: []\n")
    monkeypatch.setenv("SPLITEDGE_DEVICE_EDGE__TIMEOUT", "3")
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    text = str(error.value)
    assert "bundle: Value error, give exactly one of bundle.path or bundle.url" in text
    assert "sinks: " in text
    assert "edge.timeout: unknown key" in text
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(path)


def test_the_documented_example_config_is_valid() -> None:
    settings = load_settings(ROOT / "deploy" / "device.example.yaml")
    assert settings.edge.window >= 1


def test_backoff_grows_is_capped_and_jittered() -> None:
    config = EdgeConfig(backoff={"initial_s": 0.1, "max_s": 2.0, "multiplier": 2, "jitter": 0.2})
    rng = random.Random(0)
    delays = [backoff_delay(n, config, rng) for n in range(10)]
    assert 0.08 <= delays[0] <= 0.12
    assert all(0.8 * 2.0 <= d <= 1.2 * 2.0 for d in delays[5:])
    assert delays[3] > delays[1]


def test_the_benchmark_stream_draws_benchmark_scenes_with_empty_stretches() -> None:
    from device_client.sources import SceneGenerator, frame_generator

    config = GeneratedSource(kind="generated", seed=2, empty_run=2, object_run=3)
    generator = frame_generator(config)
    assert isinstance(generator, SceneGenerator)  # the default is the benchmark's scenes
    again = frame_generator(config)
    assert all(np.array_equal(generator.frame(i), again.frame(i)) for i in (0, 3, 7))
    assert [bool(generator.boxes(i)) for i in range(5)] == [True, True, True, False, False]
    assert generator.frame(0).shape == (240, 320, 3)
    # an empty frame is the clip's background through its camera: no object pixels at all
    assert not generator.boxes(3) and not np.array_equal(generator.frame(3), generator.frame(0))
    plumbing = frame_generator(config.model_copy(update={"scenes": "plumbing"}))
    assert isinstance(plumbing, ShapesGenerator)


@pytest.mark.parametrize("regions", [True, False])
def test_the_regions_flag_reaches_the_head(regions: bool) -> None:
    """`pipeline.prefilter.regions: false` codes every latent position of a bundle with a region
    head: the daemon's runner then has no regions and its payload carries no region string."""
    from device_client.daemon import build_runners
    from shared.bundle import load_bundle

    bundle = load_bundle(ROOT / "bundles" / "demo-shapes")
    assert bundle.manifest.regions is not None
    settings = load_settings(None, bundle={"path": str(bundle.root)},
                             source={"kind": "generated"},
                             pipeline={"prefilter": {"regions": regions}})
    head, _ = build_runners(bundle, settings)
    assert (head.regions is not None) is regions
    image = np.zeros((240, 320, 3), np.uint8)
    image[60:180, 100:220] = (230, 200, 40)
    out = head.run(image)
    assert out.payload is not None
    assert (len(out.payload.strings) == 3) is regions
