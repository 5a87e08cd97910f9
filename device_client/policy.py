"""Which branch a frame takes: the policy interface, and the fixed policy of the config.

A policy gets every frame that passed the prefilter before the head runs (`choose`) and every
outcome after (`observe`) — server stage timings, uplink round trip, bytes sent, deadline misses.
`FixedBranch` ignores them; the adaptive scheduler (`device_client/scheduler.py`) learns the link,
the edge's load and this device's contention from them.

Never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from device_client.outcomes import Outcome
from device_client.sources import Frame
from shared.bundle import Branch, Manifest
from shared.errors import ConfigError

RUNNABLE_KINDS = ("split", "jpeg", "webp", "local", "skip")


@dataclass(frozen=True)
class Choice:
    """What to do with one frame: run `branch`, or (`track`) carry the last boxes onto it.

    The predictions are the scheduler's, shown in the frame's outcome line."""

    branch: Branch
    track: bool = False
    interval: int = 1
    probe: bool = False
    predicted_ms: float | None = None
    predicted_accuracy: float | None = None
    link_mbit: float | None = None  # the throughput estimate the prediction used

    def to_json(self) -> dict[str, Any]:
        return {
            "branch": self.branch.id,
            "track": self.track,
            "interval": self.interval,
            "probe": self.probe,
            "predicted_ms": None if self.predicted_ms is None else round(self.predicted_ms, 2),
            "predicted_accuracy": (
                None if self.predicted_accuracy is None else round(self.predicted_accuracy, 4)
            ),
            "link_mbit": None if self.link_mbit is None else round(self.link_mbit, 3),
        }


class BranchPolicy(Protocol):
    def choose(self, frame: Frame) -> Choice:
        """The branch for this frame (called on the pipeline thread, before the head)."""
        ...

    def observe(self, outcome: Outcome) -> None:
        """Every frame's outcome, from whichever thread finished it; must be quick."""
        ...


class FixedBranch:
    """Always the same branch: what the config names, or the widest split branch."""

    def __init__(self, branch: Branch) -> None:
        self.branch = branch
        self._choice = Choice(branch)

    @classmethod
    def from_manifest(cls, manifest: Manifest, branch_id: str | None) -> FixedBranch:
        return cls(pick_branch(manifest, branch_id))

    def choose(self, frame: Frame) -> Choice:
        return self._choice

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
