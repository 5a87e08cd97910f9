"""The device daemon's one settings class: a YAML file, every key overridable by an env var.

    settings = load_settings("device.yaml")            # ConfigError names every bad key
    SPLITEDGE_DEVICE_EDGE__TARGET=10.0.0.2:50051 splitedge device run --config device.yaml

Env vars are `SPLITEDGE_DEVICE_` + the key path in upper case, nested keys joined by `__`
(`edge.sla_ms` → `SPLITEDGE_DEVICE_EDGE__SLA_MS`); lists and mappings take JSON
(`SPLITEDGE_DEVICE_SINKS='[{"kind": "stdout"}]'`). Env wins over the file, the file over the
defaults. Unknown keys are refused everywhere: a typo must not silently fall back to a default.

Never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.errors import ConfigError

ENV_PREFIX = "SPLITEDGE_DEVICE_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BundleConfig(_Section):
    """Where the model bundle comes from: a local directory, or the edge's HTTP API (cached)."""

    path: Path | None = Field(default=None, description="a bundle directory on this device")
    url: str | None = Field(
        default=None, description="the edge's HTTP base URL, e.g. http://edge:8080"
    )
    name: str | None = Field(default=None, description="model name to fetch from `url`")
    version: str = Field(default="", description="model version to fetch ('' = the newest)")
    timeout_s: float = Field(default=30.0, gt=0, description="HTTP timeout of the download")
    max_archive_mb: float = Field(
        default=1024, gt=0, description="refuse a bundle archive larger than this (MiB)"
    )
    max_unpacked_mb: float = Field(
        default=2048, gt=0, description="refuse a bundle whose files add up to more (MiB)"
    )
    ca_file: Path | None = Field(
        default=None, description="PEM roots to trust for an https:// url (None: system roots)"
    )

    @model_validator(mode="after")
    def _one_origin(self) -> BundleConfig:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of bundle.path or bundle.url")
        if self.url is not None and not self.name:
            raise ValueError("bundle.url needs bundle.name (the model to fetch)")
        return self


class TlsConfig(_Section):
    ca_file: Path | None = Field(
        default=None, description="PEM roots to trust (None: system roots)"
    )
    server_name: str | None = Field(
        default=None, description="override the name checked on the cert"
    )


class BackoffConfig(_Section):
    """Reconnect delays: initial · multiplier^n, capped at max_s, each ± jitter (a fraction)."""

    initial_s: float = Field(default=0.2, gt=0)
    max_s: float = Field(default=10.0, gt=0)
    multiplier: float = Field(default=2.0, ge=1)
    jitter: float = Field(default=0.2, ge=0, le=1)


class EdgeConfig(_Section):
    target: str = Field(default="127.0.0.1:50051", description="the edge's gRPC host:port")
    token: str | None = Field(default=None, description="bearer token (prefer token_file)")
    token_file: Path | None = Field(default=None, description="file holding the bearer token")
    tls: TlsConfig | None = Field(default=None, description="None: plaintext gRPC")
    window: int = Field(
        default=4, ge=1, le=256, description="frames in flight on the stream at most"
    )
    sla_ms: float = Field(default=500.0, gt=0, description="per-frame deadline after capture")
    keepalive_s: float = Field(default=10.0, ge=1, description="HTTP/2 ping interval while idle")
    connect_timeout_s: float = Field(default=3.0, gt=0, description="wait for a channel to come up")
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    lean_stream: bool = Field(
        default=True,
        description="leave out of each frame what did not change on the stream (edges that "
        "announce it only)",
    )

    @model_validator(mode="after")
    def _one_token(self) -> EdgeConfig:
        if self.token is not None and self.token_file is not None:
            raise ValueError("give edge.token or edge.token_file, not both")
        return self

    def bearer_token(self) -> str | None:
        if self.token_file is not None:
            try:
                return self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"edge.token_file {self.token_file}: {exc}") from exc
        return self.token


class GeneratedSource(_Section):
    """A generated stream: stretches of frames with objects, then empty ones. Deterministic by
    seed. `scenes: benchmark` draws what the benchmark draws (device_client.scenes: the demo
    bundle's classes moving over the benchmark's backgrounds, through a camera), so the demo
    bundle sees frames like its training data and its prefilter skips the empty ones;
    `scenes: plumbing` draws flat discs and rectangles on a gradient, a stream for testing the
    pipeline's plumbing with any bundle, which no model was trained on."""

    kind: Literal["generated"]
    scenes: Literal["benchmark", "plumbing"] = "benchmark"
    width: int = Field(default=320, ge=16, le=4096)
    height: int = Field(default=240, ge=16, le=4096)
    fps: float = Field(default=10.0, gt=0)
    live: bool = Field(
        default=False, description="true: paced by a capture thread, drops when behind"
    )
    frames: int | None = Field(
        default=None, ge=1, description="stop after this many (None: forever)"
    )
    seed: int = 0
    empty_run: int = Field(
        default=5, ge=0, description="frames in each empty stretch (0: none empty)"
    )
    object_run: int = Field(default=10, ge=1, description="frames in each stretch with objects")


class FolderSource(_Section):
    kind: Literal["folder"]
    path: Path
    pattern: str = Field(default="*", description="glob of file names; sorted by name")
    fps: float | None = Field(
        default=None, gt=0, description="pace to this rate (None: as fast as can)"
    )
    loop: bool = False
    live: bool = Field(
        default=False,
        description="true: read at `fps` by a capture thread, drop when behind (a camera's way)",
    )


class VideoSource(_Section):
    kind: Literal["video"]
    path: Path
    pace: bool = Field(
        default=False, description="true: at the file's FPS; false: as fast as possible"
    )
    loop: bool = False


class CameraSource(_Section):
    """A live camera: an index (0), a V4L2 device (/dev/video0), or an RTSP/HTTP URL."""

    kind: Literal["camera"]
    uri: str = Field(default="0", description="index, /dev/videoN, or rtsp://…")
    width: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)
    fps: float | None = Field(default=None, gt=0, description="ask the camera for this rate")
    reopen_s: float = Field(default=2.0, gt=0, description="wait before reopening a lost stream")


SourceConfig = Annotated[
    GeneratedSource | FolderSource | VideoSource | CameraSource, Field(discriminator="kind")
]


class PrefilterConfig(_Section):
    enabled: bool = True
    # gate=true runs the small prefilter graph before the head (cheap on empty scenes);
    # false reads the head's own score and skips only the encode and the send.
    gate: bool = True
    threshold: float | None = Field(default=None, ge=0, le=1, description="None: the manifest's")
    # regions=true codes only the latent cells where the head sees objects, when the bundle has a
    # region head (manifest `regions`); false codes every position (more bytes, same answers on
    # the objects; for a tail that needs the background).
    regions: bool = True


FailureAction = Literal["fallback", "drop"]


class SchedulerConfig(_Section):
    """The adaptive policy's knobs (ApproxDet-style; see device_client/scheduler.py)."""

    margin: float = Field(
        default=1.3, gt=1.0, description="a plan fits when its predicted latency ≤ SLA ÷ margin"
    )
    branches: tuple[str, ...] = Field(
        default=(), description="branch ids the policy may choose ([] = every runnable branch)"
    )
    intervals: tuple[int, ...] = Field(
        default=(1, 2, 3, 5, 8),
        min_length=1,
        description="detect every k-th frame (k > 1: track boxes on the frames between)",
    )
    interval_accuracy: tuple[float, ...] = Field(
        default=(1.0, 0.94, 0.879, 0.761, 0.643),  # benchmarks/tracking.py, oracle detections
        min_length=1,
        description="share of accuracy kept at each interval (benchmarks/tracking.py measures it)",
    )
    switch_up_after: int = Field(
        default=8, ge=1, description="decisions a better plan must win before it is taken"
    )
    min_gain: float = Field(
        default=0.005, ge=0, description="accuracy a better plan must add to be worth a switch"
    )
    byte_price: float = Field(
        default=0.003,
        ge=0,
        description="accuracy a plan gives up per KB it sends per frame (0: bytes are free)",
    )
    initial_mbit: float = Field(default=2.0, gt=0, description="link estimate before any sample")
    safety: float = Field(default=0.9, gt=0, le=1, description="share of the estimate planned on")
    probe_budget: float = Field(
        default=0.05, gt=0, le=0.5, description="probe bytes ≤ this share of the link's capacity"
    )
    recovery_replies: int = Field(
        default=3,
        ge=1,
        description="after a stall, each of the first this many replies restarts the round-trip"
        " estimate if shorter (1: only the first reply back does)",
    )
    link_utilization: float = Field(
        default=0.8, gt=0, le=1, description="a plan may fill at most this share of the link"
    )
    device_utilization: float = Field(
        default=0.9, gt=0, le=1, description="a plan may keep the device busy this share of time"
    )
    fps: float | None = Field(
        default=None, gt=0, description="frame rate planned for (None: the source's fps)"
    )

    @model_validator(mode="after")
    def _intervals_match(self) -> SchedulerConfig:
        if len(self.intervals) != len(self.interval_accuracy) or min(self.intervals) < 1:
            raise ValueError(
                "scheduler.intervals and scheduler.interval_accuracy need one entry each, "
                "intervals ≥ 1"
            )
        return self


class PipelineConfig(_Section):
    policy: Literal["fixed", "adaptive"] = Field(
        default="fixed",
        description="fixed: always `branch`; adaptive: the scheduler picks per frame",
    )
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    branch: str | None = Field(default=None, description="fixed branch id (None: the widest split)")
    tasks: tuple[Literal["detection", "classification"], ...] = Field(
        default=(), description="tasks asked of the edge (empty: every task of the model)"
    )
    threads: int = Field(default=1, ge=1, le=64, description="onnxruntime intra-op threads")
    providers: tuple[str, ...] = Field(
        default=("CPUExecutionProvider",),
        min_length=1,
        description="onnxruntime providers, in order",
    )
    prefilter: PrefilterConfig = Field(default_factory=PrefilterConfig)
    on_edge_failure: FailureAction = Field(
        default="fallback",
        description="edge unreachable or an error reply: run local.onnx, or drop",
    )
    on_deadline_miss: FailureAction = Field(
        default="fallback", description="no reply by the deadline: run local.onnx, or drop"
    )
    queue: int = Field(default=2, ge=1, le=64, description="live sources: frames buffered at most")


class StdoutSink(_Section):
    kind: Literal["stdout"]


class FileSink(_Section):
    kind: Literal["file"]
    path: Path


class WebhookSink(_Section):
    kind: Literal["webhook"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    batch: int = Field(default=32, ge=1, description="outcomes per POST at most")
    flush_s: float = Field(
        default=1.0, gt=0, description="POST at least this often when outcomes wait"
    )
    queue: int = Field(
        default=1024, ge=1, description="outcomes held while the hook is slow; then drop"
    )
    timeout_s: float = Field(default=5.0, gt=0)


SinkConfig = Annotated[StdoutSink | FileSink | WebhookSink, Field(discriminator="kind")]


class MetricsConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535, description="0: pick a free port (announced)")


class DeviceSettings(BaseSettings):
    """Everything the daemon reads. Sections mirror the YAML file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    device_id: str = Field(default="device", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    state_dir: Path = Field(
        default=Path("/var/lib/splitedge"), description="bundle cache and state"
    )
    bundle: BundleConfig
    edge: EdgeConfig = Field(default_factory=EdgeConfig)
    source: SourceConfig
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    sinks: tuple[SinkConfig, ...] = Field(
        default=(StdoutSink(kind="stdout"),), min_length=1, description="where outcomes go"
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; env vars override it, as a deployment expects.
        return (env_settings, init_settings)


def load_settings(path: Path | str | None, **overrides: Any) -> DeviceSettings:
    """Read `path` (YAML; None: env only), apply env vars, validate. ConfigError on any problem."""
    raw: dict[str, Any] = {}
    origin = str(path) if path is not None else "environment"
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys, not {loaded!r}")
        raw = loaded
    raw.update(overrides)
    try:
        return DeviceSettings(**raw)
    except ValidationError as exc:
        raise ConfigError(describe(exc, origin)) from None


def describe(exc: ValidationError, origin: str) -> str:
    """One line per problem: the key path, what is wrong, and the value given."""
    lines = [f"{origin}: {exc.error_count()} invalid setting(s):"]
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key (a typo? see deploy/device.example.yaml)")
            continue
        given = error.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"  {where}: {error['msg']}{shown}")
    lines.append(f"  env vars override keys as {ENV_PREFIX}SECTION__KEY")
    return "\n".join(lines)
