"""Reading a model bundle from disk: validate the manifest, then the checksum of every file.

A bundle that fails any check is refused with a `BundleError` saying what was wrong and what to
do; nothing half-loaded is returned. Writing goes through `write_manifest`, so the writer and the
reader share one idea of what a file's digest is.

Must not import torch: the device loads bundles with this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from shared.bundle.manifest import MANIFEST_NAME, SCHEMA_VERSION, FileDigest, Manifest
from shared.errors import BundleError

_CHUNK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # 0 where the platform has none (Windows)


def digest_file(path: Path) -> FileDigest:
    sha = hashlib.sha256()
    size = 0
    # O_NOFOLLOW: the file itself must not be a link (the checks below run before; this closes
    # the window between check and open).
    with open(os.open(path, os.O_RDONLY | _NOFOLLOW), "rb") as stream:
        while chunk := stream.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return FileDigest(sha256=sha.hexdigest(), bytes=size)


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: its directory and its manifest. Paths come from `path()`."""

    root: Path
    manifest: Manifest

    def path(self, name: str) -> Path:
        if name not in self.manifest.files:
            raise BundleError(f"{name!r} is not a file of bundle {self.manifest.name}")
        return self.root / name


def load_bundle(root: Path | str, *, verify: bool = True) -> Bundle:
    """Validate `root/manifest.json` and (unless `verify=False`) every file's sha256.

    Raises BundleError for a missing or invalid manifest, an unknown schema version, a missing
    file, a file that is a symbolic link, or a checksum mismatch.
    """
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if manifest_path.is_symlink():
        raise BundleError(f"{manifest_path} is a symbolic link; a bundle holds plain files only")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{root} is not a model bundle: no {MANIFEST_NAME}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{manifest_path}: schema_version {version!r}, this splitedge reads {SCHEMA_VERSION}; "
            "re-export the bundle, or upgrade splitedge"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{manifest_path}: invalid manifest:\n{exc}") from exc
    for name, expected in manifest.files.items():
        path = root / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{manifest_path}: file name {name!r} leaves the bundle directory")
        _refuse_links(root, name, manifest.name)
        if not path.is_file():
            raise BundleError(f"bundle {manifest.name}: file {name} is missing from {root}")
        if verify:
            actual = digest_file(path)
            if actual != expected:
                raise BundleError(
                    f"bundle {manifest.name}: {name} has sha256 {actual.sha256[:12]}… "
                    f"({actual.bytes} bytes), the manifest says {expected.sha256[:12]}… "
                    f"({expected.bytes} bytes): the file is corrupt or was changed; re-export "
                    "or re-download the bundle"
                )
    return Bundle(root, manifest)


def _refuse_links(root: Path, name: str, bundle: str) -> None:
    """No component of a bundle file's path below the root may be a symbolic link: a link could
    point the loader (and its torch.load) anywhere on the machine. The root itself may be one
    (`bundles/current -> v2`): the operator chose it."""
    path = root
    for part in Path(name).parts:
        path = path / part
        if path.is_symlink():
            raise BundleError(
                f"bundle {bundle}: {path} is a symbolic link; a bundle holds plain files only "
                "(copy the file in instead of linking it)"
            )


def write_manifest(root: Path | str, manifest: Manifest) -> Path:
    """Write `manifest` to `root/manifest.json`, with `files` recomputed from the files on disk."""
    root = Path(root)
    files = {name: digest_file(root / name) for name in sorted(manifest.files)}
    final = manifest.model_copy(update={"files": files})
    # Validate the copy too: model_copy(update=...) skips validation.
    final = Manifest.model_validate(final.model_dump(mode="json"))
    path = root / MANIFEST_NAME
    path.write_text(json.dumps(final.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    return path
