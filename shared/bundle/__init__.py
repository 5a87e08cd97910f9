"""The model bundle (torch-free): manifest schema, loader with checksums, writer.

bundle = load_bundle("bundles/demo-shapes")      # BundleError if corrupt or unknown schema
bundle.manifest.heads[0].file, bundle.path("entropy.npz")
"""

from __future__ import annotations

from shared.bundle.loader import Bundle, digest_file, load_bundle, write_manifest
from shared.bundle.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Branch,
    CenterCropResize,
    DerivedLabel,
    FileDigest,
    FixedResize,
    HeadFile,
    LatentSpec,
    Manifest,
    MinMaxSideResize,
    PrefilterSpec,
    Preprocessing,
    RegionsSpec,
    Task,
    split_branch_id,
)

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "Branch",
    "Bundle",
    "CenterCropResize",
    "DerivedLabel",
    "FileDigest",
    "FixedResize",
    "HeadFile",
    "LatentSpec",
    "Manifest",
    "MinMaxSideResize",
    "PrefilterSpec",
    "Preprocessing",
    "RegionsSpec",
    "Task",
    "digest_file",
    "load_bundle",
    "split_branch_id",
    "write_manifest",
]
