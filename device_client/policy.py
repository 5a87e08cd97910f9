"""Which branch a frame takes: the policy interface, and the fixed policy of the config.

The adaptive scheduler (bandwidth, device load, SLA) is another `BranchPolicy`: it gets every
frame before the head runs, and every outcome after — server stage timings, uplink round trip,
bytes sent, deadline misses — so it can learn the link and the server's load from them.

Never imports torch.
"""

from __future__ import annotations

from typing import Protocol

from device_client.outcomes import Outcome
from device_client.sources import Frame
from shared.bundle import Branch, Manifest
from shared.errors import ConfigError

RUNNABLE_KINDS = ("split", "jpeg", "webp", "local", "skip")


class BranchPolicy(Protocol):
    def choose(self, frame: Frame) -> Branch:
        """The branch for this frame (called on the pipeline thread, before the head)."""
        ...

    def observe(self, outcome: Outcome) -> None:
        """Every frame's outcome, from whichever thread finished it; must be quick."""
        ...


class FixedBranch:
    """Always the same branch: what the config names, or the widest split branch."""

    def __init__(self, branch: Branch) -> None:
        self.branch = branch

    @classmethod
    def from_manifest(cls, manifest: Manifest, branch_id: str | None) -> FixedBranch:
        return cls(pick_branch(manifest, branch_id))

    def choose(self, frame: Frame) -> Branch:
        return self.branch

    def observe(self, outcome: Outcome) -> None:
        pass  # a fixed policy learns nothing; the scheduler will


def pick_branch(manifest: Manifest, branch_id: str | None) -> Branch:
    branches = {b.id: b for b in manifest.branches if b.kind in RUNNABLE_KINDS}
    if branch_id is None:
        splits = [b for b in branches.values() if b.kind == "split" and b.width is not None]
        if not splits:
            raise ConfigError(
                f"bundle {manifest.name} has no split branch; set pipeline.branch to one of "
                f"{sorted(branches)}"
            )
        return max(splits, key=lambda b: b.width or 0.0)
    if branch_id not in branches:
        raise ConfigError(
            f"pipeline.branch {branch_id!r} is not a branch of bundle {manifest.name} "
            f"{manifest.version}; it has {sorted(branches)}"
        )
    branch = branches[branch_id]
    if branch.kind == "split" and (branch.width is None or branch.codec is None):
        raise ConfigError(f"branch {branch_id} of bundle {manifest.name} has no width or codec")
    return branch
