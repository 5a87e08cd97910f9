"""The models an edge server holds: each bundle loaded once, its tails, codecs and archive.

Several bundles, and several versions of one bundle, live side by side; a request names the
model (and optionally the version: empty means the newest loaded).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_server.plausible import LatentPlausibility
from edge_server.redact import shown
from shared.bundle import Branch, Bundle, load_bundle
from shared.bundle.geometry import frame_geometry
from shared.codecs import (
    IMAGE_CODECS,
    Codec,
    CodecId,
    DecodeLimits,
    FactorizedTables,
    codec_spec,
    make_codec,
)
from shared.errors import UnknownModel
from split_models.runtime import TailRuntime


@dataclass(frozen=True)
class BundleArchive:
    """The bundle as one tar.gz for devices to download; built once, deterministic bytes."""

    data: bytes
    sha256: str

    @classmethod
    def build(cls, bundle: Bundle) -> BundleArchive:
        buffer = io.BytesIO()
        # mtime 0 in the gzip header and the tar entries: the same bundle gives the same bytes,
        # so every replica (and a restarted one) serves the same ETag. (tarfile's "w:gz" would
        # stamp the gzip header with the build time.)
        # The manifest first: a device then knows every file's name and size before it reads
        # any other entry, and can refuse an unlisted one without unpacking it.
        with (
            gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6, mtime=0) as compressed,
            tarfile.open(fileobj=compressed, mode="w") as tar,
        ):
            for name in ["manifest.json", *sorted(bundle.manifest.files)]:
                path = bundle.root / name
                info = tarfile.TarInfo(f"{bundle.manifest.name}/{name}")
                info.size = path.stat().st_size
                info.mtime = 0
                info.mode = 0o644
                with path.open("rb") as stream:
                    tar.addfile(info, stream)
        data = buffer.getvalue()
        return cls(data, hashlib.sha256(data).hexdigest())


@dataclass
class LoadedModel:
    bundle: Bundle
    tail: TailRuntime
    codecs: dict[CodecId, Codec]
    plausibility: LatentPlausibility
    _archive: BundleArchive | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.bundle.manifest.name

    @property
    def version(self) -> str:
        return self.bundle.manifest.version

    def branch(self, branch_id: str) -> Branch:
        for branch in self.bundle.manifest.branches:
            if branch.id == branch_id:
                return branch
        known = ", ".join(b.id for b in self.bundle.manifest.branches)
        raise UnknownModel(
            f"model {self.name} {self.version} has no branch {shown(branch_id)}; it has {known}"
        )

    def knows_branch(self, branch_id: str) -> bool:
        return any(b.id == branch_id for b in self.bundle.manifest.branches)

    def warm_up(self) -> None:
        """One frame through every tail (every head width) and the teachers, so the first real
        frame does not pay for lazy initialisation."""
        manifest = self.bundle.manifest
        geometry = frame_geometry((480, 640), manifest.preprocessing)
        stride = manifest.latent.stride
        cells = (geometry.padded[0] // stride, geometry.padded[1] // stride)
        for head in manifest.heads:
            latent = np.zeros((head.latent_channels, *cells), dtype=np.float32)
            self.tail.run_latents([latent], [geometry.input_size], [geometry.original])
        if any(b.kind in ("jpeg", "webp") for b in manifest.branches):
            self.tail.run_images([np.full((*geometry.original, 3), 128, dtype=np.uint8)])

    def archive(self) -> BundleArchive:
        if self._archive is None:
            self._archive = BundleArchive.build(self.bundle)
        return self._archive


def load_model(root: Path, limits: DecodeLimits) -> LoadedModel:
    bundle = load_bundle(root)
    manifest = bundle.manifest
    tables = FactorizedTables.load(bundle.path(manifest.entropy_file))
    # The branches' latent codecs, and every image codec: an HTTP upload may be any of them.
    codec_ids = {codec_spec(b.codec).id for b in manifest.branches if b.codec} | set(IMAGE_CODECS)
    codecs = {cid: make_codec(cid, tables=tables, limits=limits) for cid in codec_ids}
    plausibility = LatentPlausibility.of(manifest, tables)
    # One load, one checksum pass: the tail runtime takes the bundle as loaded here.
    return LoadedModel(bundle, TailRuntime.from_bundle(bundle), codecs, plausibility)


class ModelRegistry:
    def __init__(self, models: Iterable[LoadedModel] = ()) -> None:
        self._models: dict[str, dict[str, LoadedModel]] = {}
        for model in models:
            self.add(model)

    def add(self, model: LoadedModel) -> None:
        self._models.setdefault(model.name, {})[model.version] = model

    def __iter__(self) -> Any:
        for versions in self._models.values():
            yield from versions.values()

    def knows(self, name: str) -> bool:
        return name in self._models

    def resolve(self, name: str, version: str = "") -> LoadedModel:
        versions = self._models.get(name)
        if not versions:
            known = ", ".join(sorted(self._models)) or "none"
            raise UnknownModel(f"no model {shown(name)}; this server holds: {known}")
        if not version:
            return versions[max(versions, key=_version_key)]
        if version not in versions:
            raise UnknownModel(
                f"model {shown(name)} has no version {shown(version)}; "
                f"loaded: {', '.join(sorted(versions))}"
            )
        return versions[version]


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    """'1.10' sorts after '1.9': compare dotted parts as numbers where they are numbers."""
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in version.split("."))
