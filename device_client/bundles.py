"""The device's model bundle: a local directory, or downloaded from the edge and cached.

    store = BundleStore(Path("/var/lib/splitedge"), config.bundle, token)
    bundle = store.resolve()        # BundleError when it cannot give a verified bundle

Download: `GET {url}/v1/models/{name}/bundle` (tar.gz, entries `<name>/<file>`), with
`If-None-Match` when a cached copy exists (304 → the cache). The archive's sha256 must equal the
`X-Bundle-SHA256` header, and the unpacked bundle must pass `load_bundle` (every file's sha256
against the manifest) before it replaces the cached one; a corrupt download is refused with a
`BundleError`, never half-installed. When the edge cannot be reached at start-up, the last
verified copy is used, so a device boots while the edge is down.

Layout under the state directory: `bundles/<name>/<archive sha256>/…` and
`bundles/<name>/current.json`. Never imports torch.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import httpx

from device_client.config import BundleConfig
from shared.bundle import MANIFEST_NAME, Bundle, load_bundle
from shared.errors import BundleError

log = logging.getLogger("splitedge.device.bundles")

MAX_ARCHIVE_BYTES = 1 << 30  # a bundle above 1 GiB is not one a Pi should take


class BundleStore:
    def __init__(self, state_dir: Path, config: BundleConfig, token: str | None = None) -> None:
        self.config = config
        self.token = token
        name = config.name or "local"
        self.root = state_dir / "bundles" / name

    def resolve(self) -> Bundle:
        if self.config.path is not None:
            return load_bundle(self.config.path)
        try:
            return self.fetch()
        except httpx.TransportError as exc:
            cached = self.cached()
            if cached is None:
                raise BundleError(
                    f"cannot download bundle {self.config.name!r} from {self.config.url} ({exc}) "
                    f"and there is no cached copy in {self.root}: start the edge, or set "
                    "bundle.path to a local bundle"
                ) from exc
            log.warning(
                "edge %s unreachable (%s): using cached bundle %s %s",
                self.config.url,
                exc,
                cached.manifest.name,
                cached.manifest.version,
            )
            return cached

    def cached(self) -> Bundle | None:
        """The last verified download, re-verified now; None if there is none or it is damaged."""
        current = self._current()
        if current is None:
            return None
        try:
            bundle = load_bundle(self.root / current["sha256"])
        except BundleError as exc:
            log.warning("cached bundle in %s is damaged (%s); ignoring it", self.root, exc)
            return None
        if self.config.version and bundle.manifest.version != self.config.version:
            return None
        return bundle

    def fetch(self) -> Bundle:
        assert self.config.url is not None and self.config.name is not None
        url = f"{self.config.url.rstrip('/')}/v1/models/{self.config.name}/bundle"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        cached = self.cached()
        current = self._current()
        if cached is not None and current is not None:
            headers["If-None-Match"] = current["etag"]
        params = {"version": self.config.version} if self.config.version else {}
        with httpx.Client(timeout=self.config.timeout_s) as client:
            response = client.get(url, headers=headers, params=params)
        if response.status_code == 304 and cached is not None:
            log.info("bundle %s: cached copy is current", self.config.name)
            return cached
        if response.status_code != 200:
            raise BundleError(
                f"GET {url} answered {response.status_code}: {_error_text(response)}"
                + (" (check edge.token)" if response.status_code == 401 else "")
            )
        data = response.content
        if len(data) > MAX_ARCHIVE_BYTES:
            raise BundleError(f"bundle archive of {len(data)} bytes, at most {MAX_ARCHIVE_BYTES}")
        digest = hashlib.sha256(data).hexdigest()
        announced = response.headers.get("X-Bundle-SHA256")
        if announced != digest:
            raise BundleError(
                f"downloaded bundle {self.config.name!r} is corrupt: its sha256 is "
                f"{digest[:12]}…, the edge announced {str(announced)[:12]}…; nothing was "
                "installed (retry; if it persists, re-export the bundle on the edge)"
            )
        bundle = self._install(data, digest)
        etag = response.headers.get("ETag", f'"{digest}"')
        self._write_current({"sha256": digest, "etag": etag, "version": bundle.manifest.version})
        self._prune(keep=digest)
        log.info(
            "bundle %s %s installed (%s…)", self.config.name, bundle.manifest.version, digest[:12]
        )
        return bundle

    # -- the cache -------------------------------------------------------------------------------
    def _install(self, data: bytes, digest: str) -> Bundle:
        target = self.root / digest
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            _unpack(data, staging)
            bundle = load_bundle(staging)  # every file against the manifest's sha256
            if bundle.manifest.name != self.config.name:
                raise BundleError(
                    f"asked the edge for bundle {self.config.name!r}, got {bundle.manifest.name!r}"
                )
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return load_bundle(target, verify=False)  # verified a moment ago, as `staging`

    def _current(self) -> dict[str, str] | None:
        try:
            raw = json.loads((self.root / "current.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(raw, dict) or not {"sha256", "etag"} <= raw.keys():
            return None
        return {str(k): str(v) for k, v in raw.items()}

    def _write_current(self, record: dict[str, str]) -> None:
        path = self.root / "current.json"
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(record) + "\n", encoding="utf-8")
        os.replace(scratch, path)  # atomic: a power cut leaves the old or the new record

    def _prune(self, keep: str) -> None:
        for entry in self.root.iterdir():
            if entry.is_dir() and entry.name != keep:
                shutil.rmtree(entry, ignore_errors=True)


def _unpack(data: bytes, into: Path) -> None:
    """Extract `<name>/<file>` regular files, flat; refuse anything else (links, paths that
    climb out, nested folders) before writing a byte of it."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members = archive.getmembers()
            for member in members:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or len(parts) != 2 or parts[1] in ("..", "."):
                    raise BundleError(
                        f"bundle archive entry {member.name!r} is not a plain `<name>/<file>`"
                    )
            if MANIFEST_NAME not in {PurePosixPath(m.name).name for m in members}:
                raise BundleError(f"bundle archive has no {MANIFEST_NAME}")
            for member in members:
                source = archive.extractfile(member)
                assert source is not None  # isfile() checked above
                with source, (into / PurePosixPath(member.name).name).open("wb") as out:
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"bundle archive cannot be unpacked: {exc}") from exc


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)[:200]
