"""Test-wide settings: hypothesis profiles (CI is deterministic and bounded), and the one
fixture that builds the tests' bundles (tests/bundles.py)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.bundles import Bundles

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    """Each test bundle built once per session, when a test first asks for it."""
    return Bundles(tmp_path_factory)
