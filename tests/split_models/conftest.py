"""The model code's tests run on the session's demo bundle (tests/bundles.py)."""

from __future__ import annotations

import pytest

from tests.bundles import Bundles, Demo

pytest.importorskip("torch")


@pytest.fixture(scope="session")
def demo(bundles: Bundles) -> Demo:
    return bundles.demo
