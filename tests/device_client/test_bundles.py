"""Bundle download and cache against a real HTTP server on loopback that plays the edge's
`/v1/models/{name}/bundle` endpoint — including when it serves something broken."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from device_client.bundles import BundleStore
from device_client.config import BundleConfig
from shared.errors import BundleError
from tests.device_client.conftest import free_port


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
    """Serves one archive with the edge's headers; `announce` overrides X-Bundle-SHA256."""

    def __init__(self, data: bytes, announce: str | None = None) -> None:
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
                self.send_header("Content-Length", str(len(edge.data)))
                self.end_headers()
                self.wfile.write(edge.data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeEdge]]:
    servers: list[FakeEdge] = []

    def start(data: bytes, announce: str | None = None) -> FakeEdge:
        servers.append(FakeEdge(data, announce))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def store(tmp_path: Path, url: str) -> BundleStore:
    return BundleStore(tmp_path / "state", BundleConfig(url=url, name="tiny", timeout_s=5))


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
