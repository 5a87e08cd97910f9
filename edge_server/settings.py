"""The edge server's one settings class: every field is a CLI flag and a SPLITEDGE_* env var.

splitedge serve --bundle bundles/demo --grpc-port 50051 --http-port 8080
SPLITEDGE_BUNDLE='["bundles/demo"]' SPLITEDGE_TOKENS='["s3cret"]' splitedge serve
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPLITEDGE_",
        extra="forbid",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_prog_name="splitedge serve",
    )

    bundle: list[Path] = Field(default_factory=list, description="a model bundle dir (repeat)")
    host: str = Field("127.0.0.1", description="address both ports bind to")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0: pick a free one)")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port (0: pick a free one)")

    max_batch_size: int = Field(8, ge=1, description="frames per tail call at most")
    max_queue_delay_ms: float = Field(
        0.0, ge=0, description="how long the oldest queued frame may wait for a batch to fill"
    )
    max_pending: int = Field(64, ge=1, description="queued frames per model branch before 429")
    stream_window: int = Field(8, ge=1, description="frames in flight per gRPC stream")
    tail_threads: int = Field(1, ge=1, description="threads running tails (torch compute)")
    torch_threads: int = Field(0, ge=0, description="torch intra-op threads (0: torch default)")

    max_message_bytes: int = Field(8 << 20, ge=1024, description="largest request accepted")
    max_latent_elements: int = Field(4 << 20, ge=1, description="largest latent C·H·W decoded")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="largest full frame decoded")

    probe_after_ms: float = Field(
        500.0,
        gt=0,
        description="a branch whose compute estimate is this stale lets one doomed frame through "
        "to re-measure",
    )

    http_header_timeout_s: float = Field(
        10.0, gt=0, description="HTTP: close a connection whose request headers take longer"
    )
    http_body_timeout_s: float = Field(
        30.0, gt=0, description="HTTP: answer 408 when a request body takes longer"
    )
    http_keepalive_s: float = Field(5.0, gt=0, description="HTTP: idle keep-alive connections")
    http_max_connections: int = Field(
        1000, ge=1, description="HTTP connections open at once; more are closed on accept"
    )
    open_docs: bool = Field(
        False, description="serve /docs and /openapi.json without a token even when tokens are set"
    )

    tokens: list[str] = Field(
        default_factory=list, description="bearer tokens accepted (empty: no auth)"
    )
    tls_cert: Path | None = Field(None, description="PEM certificate: serve both ports over TLS")
    tls_key: Path | None = Field(None, description="PEM private key for --tls-cert")

    drain_seconds: float = Field(10.0, ge=0, description="grace for in-flight frames on shutdown")
    warmup: bool = Field(True, description="run one frame through every tail before ready")

    @model_validator(mode="after")
    def _tls_pair(self) -> EdgeSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        return self
