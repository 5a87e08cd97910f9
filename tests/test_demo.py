"""The README's main job, in its short mode: edge + device processes on a generated clip with the
shipped demo bundle; the demo checks its own summary (every frame accounted) and exits 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_short_demo_accounts_for_every_frame(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "splitedge", "demo", "--short", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == summary["outcomes"] == 24
    assert summary["every_frame_accounted"]
    assert sum(summary["by_kind"].values()) == 24
    assert summary["by_kind"].get("edge", 0) > 0  # frames really went through the edge
    assert summary["prefilter_skips"] > 0  # the clip's empty stretch was not sent
    assert summary["jpeg_over_ours"] > 1
    assert Path(summary["annotated"]).is_file()
    lines = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert len(lines) == 24  # one printed line per frame
    # both answers from one upload: every frame the edge answered carries the frame class too
    records = [json.loads(line) for line in (tmp_path / "outcomes.jsonl").read_text().splitlines()]
    answered = [r for r in records if r["kind"] == "edge"]
    assert answered and all(r["classifications"] and r["detections"] is not None
                            for r in answered)
