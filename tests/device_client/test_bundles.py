"""Bundle download and cache against a real HTTP server on loopback that plays the edge's
`/v1/models/{name}/bundle` endpoint — including when it serves something broken."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import ssl
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from device_client.bundles import BundleStore
from device_client.config import BundleConfig
from shared.errors import BundleError
from tests.device_client.conftest import free_port
from tests.tls import self_signed


def archive(root: Path, tamper: Callable[[str, bytes], bytes] = lambda n, b: b) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(root.iterdir()):
            data = tamper(path.name, path.read_bytes())
            info = tarfile.TarInfo(f"tiny/{path.name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class FakeEdge:
    """Serves one archive with the edge's headers; `announce` overrides X-Bundle-SHA256,
    `length` the Content-Length (None: the real one; -1: none, the body ends at close)."""

    def __init__(
        self,
        data: bytes,
        announce: str | None = None,
        length: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.data, self.requests = data, []  # type: ignore[var-annotated]
        digest = hashlib.sha256(data).hexdigest()
        self.sha = announce or digest
        self.etag = f'"{digest}"'
        edge = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                edge.requests.append((self.path, self.headers.get("If-None-Match")))
                if not self.path.startswith("/v1/models/tiny/bundle"):
                    self.send_error(404)
                    return
                if self.headers.get("If-None-Match") == edge.etag:
                    self.send_response(304)
                    self.send_header("ETag", edge.etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", edge.etag)
                self.send_header("X-Bundle-SHA256", edge.sha)
                if length != -1:
                    self.send_header("Content-Length", str(length or len(edge.data)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the device hung up: what tests want
                    self.wfile.write(edge.data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeEdge]]:
    servers: list[FakeEdge] = []

    def start(data: bytes, announce: str | None = None, **options: Any) -> FakeEdge:
        servers.append(FakeEdge(data, announce, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def store(tmp_path: Path, url: str, **config: Any) -> BundleStore:
    return BundleStore(
        tmp_path / "state", BundleConfig(url=url, name="tiny", timeout_s=5, **config)
    )


def test_download_is_verified_cached_and_revalidated(
    bundle_dir: Path, tmp_path: Path, serve: Callable[..., FakeEdge]
) -> None:
    edge = serve(archive(bundle_dir))
    first = store(tmp_path, edge.url).resolve()
    assert first.manifest.name == "tiny"
    assert first.root.parent == tmp_path / "state" / "bundles" / "tiny"
    again = store(tmp_path, edge.url).resolve()
    assert again.root == first.root
    assert edge.requests[-1][1] == edge.etag  # the second ask was conditional: a 304 came back


def test_a_corrupt_download_is_refused_and_nothing_is_installed(
    bundle_dir: Path, tmp_path: Path, serve: Callable[..., FakeEdge]
) -> None:
    edge = serve(archive(bundle_dir), announce="0" * 64)
    with pytest.raises(BundleError, match="corrupt"):
        store(tmp_path, edge.url).resolve()
    assert not list((tmp_path / "state" / "bundles" / "tiny").glob("*/manifest.json"))


def test_a_file_changed_inside_the_archive_is_refused(
    bundle_dir: Path, tmp_path: Path, serve: Callable[..., FakeEdge]
) -> None:
    def flip(name: str, data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1]) if name == "entropy.npz" else data

    edge = serve(archive(bundle_dir, flip))  # the archive's own sha256 is announced correctly
    with pytest.raises(BundleError, match=r"entropy\.npz has sha256"):
        store(tmp_path, edge.url).resolve()


def test_an_archive_entry_that_climbs_out_is_refused(
    tmp_path: Path, serve: Callable[..., FakeEdge]
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("tiny/../../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    edge = serve(buffer.getvalue())
    with pytest.raises(BundleError, match="not a plain"):
        store(tmp_path, edge.url).resolve()
    assert not (tmp_path / "escape").exists()


def test_an_unreachable_edge_falls_back_to_the_cache_or_says_what_to_do(
    bundle_dir: Path, tmp_path: Path, serve: Callable[..., FakeEdge]
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BundleError, match="no cached copy"):
        store(tmp_path, down).resolve()
    edge = serve(archive(bundle_dir))
    installed = store(tmp_path, edge.url).resolve()
    assert store(tmp_path, down).resolve().root == installed.root


def ordered_archive(root: Path, names: list[str], extra: dict[str, bytes]) -> bytes:
    """An archive of `names` from `root` plus `extra` files, in exactly this order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in names:
            data = extra[name] if name in extra else (root / name).read_bytes()
            info = tarfile.TarInfo(f"tiny/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("manifest_first", [True, False])
def test_a_file_the_manifest_does_not_list_is_refused(
    bundle_dir: Path, tmp_path: Path, serve: Callable[..., FakeEdge], manifest_first: bool
) -> None:
    files = sorted(p.name for p in bundle_dir.iterdir() if p.name != "manifest.json")
    names = ["manifest.json", *files] if manifest_first else [*files, "manifest.json"]
    names.insert(1, "payload.bin")  # the unlisted 512 MiB file, smaller
    edge = serve(ordered_archive(bundle_dir, names, {"payload.bin": bytes(1 << 20)}))
    with pytest.raises(BundleError, match="does not list"):
        store(tmp_path, edge.url).resolve()
    root = tmp_path / "state" / "bundles" / "tiny"
    assert not list(root.rglob("payload.bin")) and not list(root.glob("*/manifest.json"))


def test_an_announced_size_over_the_cap_is_refused_before_reading(
    bundle_dir: Path, tmp_path: Path, serve: Callable[..., FakeEdge]
) -> None:
    edge = serve(archive(bundle_dir), length=600 << 20)  # says 600 MB
    with pytest.raises(BundleError, match="nothing was read"):
        store(tmp_path, edge.url, max_archive_mb=100).resolve()


def test_a_download_without_a_length_is_stopped_at_the_cap_and_kept_on_disk(
    tmp_path: Path, serve: Callable[..., FakeEdge]
) -> None:
    edge = serve(os.urandom(3 << 20), length=-1)  # no Content-Length: read until close
    with pytest.raises(BundleError, match="download stopped"):
        store(tmp_path, edge.url, max_archive_mb=1).resolve()
    assert not [p for p in (tmp_path / "state" / "bundles" / "tiny").iterdir()]


def test_an_archive_that_unpacks_past_the_cap_is_refused(
    bundle_dir: Path, tmp_path: Path, serve: Callable[..., FakeEdge]
) -> None:
    edge = serve(archive(bundle_dir))
    with pytest.raises(BundleError, match="unpacks to more than"):
        store(tmp_path, edge.url, max_unpacked_mb=0.01).resolve()


def test_a_local_bundle_with_a_symlink_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tiny"
    copy.mkdir()
    for path in bundle_dir.iterdir():
        (copy / path.name).symlink_to(path)  # every file a link into another directory
    config = BundleConfig(path=copy)
    with pytest.raises(BundleError, match="symbolic link"):
        BundleStore(tmp_path / "state", config).resolve()


def test_https_with_a_private_ca_and_a_warning_for_tokens_over_http(
    bundle_dir: Path, tmp_path: Path, serve: Callable[..., FakeEdge], caplog: Any
) -> None:
    (tmp_path / "tls").mkdir()
    cert, key = self_signed(tmp_path / "tls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    edge = serve(archive(bundle_dir), tls=context)
    with pytest.raises(BundleError, match="no cached copy"):  # an untrusted cert: no download
        store(tmp_path, edge.url).resolve()
    bundle = store(tmp_path, edge.url, ca_file=cert).resolve()
    assert bundle.manifest.name == "tiny"
    with caplog.at_level(logging.WARNING, logger="splitedge.device.bundles"):
        plain = BundleStore(
            tmp_path / "other", BundleConfig(url="http://edge.invalid:1", name="tiny"), "tok"
        )
        with pytest.raises(BundleError):
            plain.resolve()
    assert "plain HTTP" in caplog.text
