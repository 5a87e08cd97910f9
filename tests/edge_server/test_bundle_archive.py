"""The bundle archive the edge serves: the same bytes (and so the same ETag) whenever and
wherever it is built, and the manifest as its first entry."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest

from edge_server.models import BundleArchive
from shared.bundle import load_bundle

DEMO = Path(__file__).resolve().parents[2] / "bundles" / "demo-shapes"


def test_the_archive_does_not_depend_on_the_build_time(monkeypatch: pytest.MonkeyPatch) -> None:
    if not DEMO.exists():
        pytest.skip("the demo bundle is not in this checkout")
    bundle = load_bundle(DEMO, verify=False)
    monkeypatch.setattr(time, "time", lambda: 1_000_000_000.0)
    first = BundleArchive.build(bundle)
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)  # another replica, years later
    second = BundleArchive.build(bundle)
    assert first.sha256 == second.sha256
    with tarfile.open(fileobj=io.BytesIO(first.data), mode="r:gz") as archive:
        names = archive.getnames()
    assert names[0] == f"{bundle.manifest.name}/manifest.json"
    name = bundle.manifest.name
    assert sorted(names[1:]) == [f"{name}/{file}" for file in sorted(bundle.manifest.files)]
