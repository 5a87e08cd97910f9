"""The compose deployment's files, checked without Docker: the dashboard's PromQL parses
(promtool, when Prometheus is installed) and names only metrics the code exports, Grafana's
provisioning points at the datasource the panels use, Prometheus's config is valid, and
docker-compose.yml is valid for docker-compose (when installed). The compose check
(`make compose-check`) runs the same queries against a live Prometheus and wants data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
METRIC_SOURCES = (
    ROOT / "edge_server" / "metrics.py",
    ROOT / "device_client" / "metrics.py",
    ROOT / "loadtest" / "netshape.py",
)
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def panels() -> list[dict]:
    found = []
    for path in DASHBOARDS:
        found += [p for p in json.loads(path.read_text())["panels"] if p["type"] != "row"]
    return found


def queries() -> list[str]:
    return [
        t["expr"].replace("$__rate_interval", "1m").replace("$device", ".*")
        for p in panels()
        for t in p["targets"]
    ]


def test_the_dashboard_covers_what_the_issue_asks_for() -> None:
    assert DASHBOARDS, "no dashboard JSON under deploy/grafana/dashboards"
    text = " ".join(queries())
    for metric in (
        "splitedge_device_outcomes_total",  # per-device outcomes
        "splitedge_device_branch",  # branch in use
        "splitedge_link_sent_bytes_total",  # bytes/s on the wire
        "splitedge_device_stage_seconds_bucket",  # latency vs SLA
        "splitedge_pending_frames",  # edge queue
        "splitedge_batch_size_sum",  # batch size
    ):
        assert metric in text


def test_panels_name_only_metrics_the_code_exports() -> None:
    exported = set()
    for source in METRIC_SOURCES:
        exported |= set(re.findall(r"\b(splitedge_[a-z_]+)", source.read_text()))
    for expr in queries():
        for name in re.findall(r"\b(splitedge_[a-z_]+)", expr):
            base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), name)
            assert name in exported or base in exported, f"{name} (in {expr!r}) is not exported"


def test_provisioning_matches_the_panels_and_the_compose_mounts() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/splitedge.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert f"./deploy/grafana/dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]
    for panel in panels():
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in json.loads(DASHBOARDS[0].read_text())["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.skipif(shutil.which("promtool") is None, reason="Prometheus (promtool) not installed")
def test_every_panel_query_parses_and_the_prometheus_config_is_valid(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": expr} for i, expr in enumerate(queries())
    ]}]}  # fmt: skip
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        ["promtool", "check", "config", "--syntax-only",
         str(ROOT / "deploy" / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid_for_docker_compose_1() -> None:
    done = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
