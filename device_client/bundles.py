"""The device's model bundle: a local directory, or downloaded from the edge and cached.

    store = BundleStore(Path("/var/lib/splitedge"), config.bundle, token)
    bundle = store.resolve()        # BundleError when it cannot give a verified bundle

Download: `GET {url}/v1/models/{name}/bundle` (tar.gz, entries `<name>/<file>`), with
`If-None-Match` when a cached copy exists (304 → the cache). The archive is streamed to disk,
never held in memory, and refused past `bundle.max_archive_mb` (at once when Content-Length says
so). Its sha256 must equal the `X-Bundle-SHA256` header; only files its manifest lists, at the
sizes it lists, are unpacked (no links, at most `bundle.max_unpacked_mb`); and the unpacked
bundle must pass `load_bundle` (every file's sha256 against the manifest) before it replaces
the cached one; a corrupt download is refused with a `BundleError`, never half-installed.

The sha256 check proves the archive is the one the edge announced, not that the edge is the
one you meant: over plain HTTP both can be replaced on the way. Use an https:// url (the edge
with --tls-cert/--tls-key; `bundle.ca_file` for a private CA) wherever a token is sent.

When the edge cannot be reached at start-up, the last verified copy is used, so a device boots
while the edge is down.

Layout under the state directory: `bundles/<name>/<archive sha256>/…` and
`bundles/<name>/current.json`. Never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import ssl
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import httpx
from pydantic import ValidationError

from device_client.config import BundleConfig
from shared.bundle import MANIFEST_NAME, Bundle, Manifest, load_bundle
from shared.errors import BundleError

log = logging.getLogger("splitedge.device.bundles")

MIB = 1 << 20
MAX_MANIFEST_BYTES = 1 << 20
_CHUNK = 1 << 16


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
        _warn_if_token_in_clear(url, self.token)
        cached = self.cached()
        current = self._current()
        if cached is not None and current is not None:
            headers["If-None-Match"] = current["etag"]
        params = {"version": self.config.version} if self.config.version else {}
        self.root.mkdir(parents=True, exist_ok=True)
        download = self.root / f".download-{os.getpid()}"
        try:
            with (
                httpx.Client(timeout=self.config.timeout_s, verify=self._verify()) as client,
                client.stream("GET", url, headers=headers, params=params) as response,
            ):
                if response.status_code == 304 and cached is not None:
                    log.info("bundle %s: cached copy is current", self.config.name)
                    return cached
                if response.status_code != 200:
                    raise BundleError(
                        f"GET {url} answered {response.status_code}: {_error_text(response)}"
                        + (" (check edge.token)" if response.status_code == 401 else "")
                    )
                digest = self._save(response, download)
                announced = response.headers.get("X-Bundle-SHA256")
                etag = response.headers.get("ETag", f'"{digest}"')
            if announced != digest:
                raise BundleError(
                    f"downloaded bundle {self.config.name!r} is corrupt: its sha256 is "
                    f"{digest[:12]}…, the edge announced {str(announced)[:12]}…; nothing was "
                    "installed (retry; if it persists, re-export the bundle on the edge)"
                )
            bundle = self._install(download, digest)
        finally:
            download.unlink(missing_ok=True)
        self._write_current({"sha256": digest, "etag": etag, "version": bundle.manifest.version})
        self._prune(keep=digest)
        log.info(
            "bundle %s %s installed (%s…)", self.config.name, bundle.manifest.version, digest[:12]
        )
        return bundle

    def _save(self, response: httpx.Response, path: Path) -> str:
        """Stream the archive to `path`, hashing as it goes; never more than the cap, and not a
        byte when the announced length is already over it. Returns the sha256."""
        cap = int(self.config.max_archive_mb * MIB)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise BundleError(
                f"the edge offers a bundle archive of {int(declared)} bytes, more than "
                f"bundle.max_archive_mb ({self.config.max_archive_mb:g} MiB); nothing was read"
            )
        sha = hashlib.sha256()
        size = 0
        with path.open("wb") as out:
            for chunk in response.iter_bytes(_CHUNK):
                size += len(chunk)
                if size > cap:
                    raise BundleError(
                        f"bundle archive larger than bundle.max_archive_mb "
                        f"({self.config.max_archive_mb:g} MiB); download stopped"
                    )
                sha.update(chunk)
                out.write(chunk)
        return sha.hexdigest()

    def _verify(self) -> ssl.SSLContext | bool:
        if self.config.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.config.ca_file))

    # -- the cache -------------------------------------------------------------------------------
    def _install(self, archive: Path, digest: str) -> Bundle:
        target = self.root / digest
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            _unpack(archive, staging, int(self.config.max_unpacked_mb * MIB))
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


def _unpack(archive_path: Path, into: Path, max_unpacked: int) -> None:
    """Extract `<name>/<file>` regular files, flat, that the archive's own manifest lists with
    the size it lists; refuse anything else (links, paths that climb out, nested folders,
    unlisted or resized files, more than `max_unpacked` bytes in all) before writing a byte.

    Two passes over the headers: the first checks every entry (and reads the manifest, which
    the edge puts first so an unlisted entry is refused as soon as its header is read), the
    second writes."""
    try:
        with tarfile.open(archive_path, mode="r:gz") as archive:
            members: list[tarfile.TarInfo] = []
            listed: dict[str, int] | None = None
            total = 0
            for member in archive:  # one header at a time: stop at the first bad one
                name = _entry_name(member)
                if name in {_entry_name(m) for m in members}:
                    raise BundleError(f"bundle archive holds {name!r} twice")
                total += member.size
                if total > max_unpacked:
                    raise BundleError(
                        f"bundle archive unpacks to more than {max_unpacked} bytes "
                        "(bundle.max_unpacked_mb); nothing was installed"
                    )
                members.append(member)
                if name == MANIFEST_NAME:
                    listed = _listed_files(archive, member)
                if listed is not None:
                    for seen in members:
                        _check_listed(_entry_name(seen), seen.size, listed)
            if listed is None:
                raise BundleError(f"bundle archive has no {MANIFEST_NAME}")
            for member in members:
                source = archive.extractfile(member)
                assert source is not None  # isfile() checked above
                # "xb": a fresh file in a fresh directory; never through a link.
                with source, (into / _entry_name(member)).open("xb") as out:
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"bundle archive cannot be unpacked: {exc}") from exc


def _entry_name(member: tarfile.TarInfo) -> str:
    parts = PurePosixPath(member.name).parts
    if not member.isfile() or len(parts) != 2 or parts[1] in ("..", "."):
        raise BundleError(f"bundle archive entry {member.name!r} is not a plain `<name>/<file>`")
    return parts[1]


def _listed_files(archive: tarfile.TarFile, member: tarfile.TarInfo) -> dict[str, int]:
    """The manifest's files with their sizes (and the manifest itself, any size up to 1 MiB)."""
    if member.size > MAX_MANIFEST_BYTES:
        raise BundleError(f"bundle archive's {MANIFEST_NAME} is {member.size} bytes; too large")
    source = archive.extractfile(member)
    assert source is not None
    try:
        manifest = Manifest.model_validate_json(source.read())
    except ValidationError as exc:
        raise BundleError(f"bundle archive's {MANIFEST_NAME} is invalid:\n{exc}") from exc
    listed = {name: digest.bytes for name, digest in manifest.files.items()}
    listed[MANIFEST_NAME] = member.size
    return listed


def _check_listed(name: str, size: int, listed: dict[str, int]) -> None:
    if name not in listed:
        raise BundleError(
            f"bundle archive holds {name!r}, which its manifest does not list; nothing was "
            "installed"
        )
    if size != listed[name]:
        raise BundleError(
            f"bundle archive's {name!r} is {size} bytes, its manifest says {listed[name]}"
        )


def _warn_if_token_in_clear(url: str, token: str | None) -> None:
    """A bearer token over plain HTTP is readable by anyone on the path: say so (once per
    download) unless the edge is this machine."""
    parsed = httpx.URL(url)
    if token and parsed.scheme == "http" and parsed.host not in ("127.0.0.1", "::1", "localhost"):
        log.warning(
            "bundle.url %s is plain HTTP: the bearer token crosses the network unencrypted; "
            "serve the edge with --tls-cert/--tls-key and use an https:// url (bundle.ca_file "
            "for a private CA)",
            url,
        )


def _error_text(response: httpx.Response) -> str:
    """The start of an error body (streamed: at most a few KiB are read)."""
    raw = b""
    for chunk in response.iter_bytes(_CHUNK):
        raw += chunk
        if len(raw) >= 4096:
            break
    try:
        body = json.loads(raw)
    except ValueError:
        return raw[:200].decode("utf-8", "replace")
    return str(body.get("error", body))[:200] if isinstance(body, dict) else str(body)[:200]
