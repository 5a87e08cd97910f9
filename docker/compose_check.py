"""`make compose-check`: the compose deployment works, end to end, on this host.

    python3 docker/compose_check.py [--keep] [--json out/compose-check.json]

1. up: every service of docker-compose.yml (Grafana only when its image is here or pullable),
   under its own project name and host ports, so it does not collide with a `make compose-up`;
2. healthy: every container with a healthcheck reports healthy (the edge's is /readyz);
3. flowing: Prometheus scrapes every target (`up == 1`) and every camera's outcome counters grow;
4. dashboard: every panel query of deploy/grafana/dashboards/*.json runs on that Prometheus and
   returns series; the Grafana provisioning files point at the datasource uid the panels use;
5. live link change: link-1's rate is pinned low with `netshape set`, the wire bytes/s of cam-1
   drop under the new rate, then it is unpinned and they rise again;
6. down (`down -v`), unless --keep.

Prints one line per step and a JSON summary; exits 1 on the first failed step (after `down`).
Needs docker, docker-compose (or `docker compose`) and PyYAML (the project's venv has it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROJECT = "splitedge-check"
PORTS = {"EDGE_GRPC_PORT": "25051", "EDGE_HTTP_PORT": "28080", "PROMETHEUS_PORT": "29090",
         "GRAFANA_PORT": "23000"}  # fmt: skip
RATE_WINDOW = "20s"


class CheckFailed(RuntimeError):
    pass


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise CheckFailed("neither `docker compose` nor `docker-compose` is installed")


class Deployment:
    def __init__(self) -> None:
        self.compose = [*compose_command(), "-p", PROJECT, "-f", str(COMPOSE_FILE)]
        self.env = os.environ | PORTS
        self.prometheus = f"http://127.0.0.1:{PORTS['PROMETHEUS_PORT']}"

    def run(self, *args: str, check: bool = True, capture: bool = True) -> str:
        done = subprocess.run(
            [*self.compose, *args], cwd=ROOT, env=self.env, text=True,
            capture_output=capture,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise CheckFailed(f"{' '.join(args)}: {(done.stderr or '')[-2000:]}")
        return done.stdout or ""

    def container(self, service: str) -> str:
        return self.run("ps", "-q", service).strip()

    def health(self, service: str) -> str:
        cid = self.container(service)
        if not cid:
            return "missing"
        done = subprocess.run(
            ["docker", "inspect", "-f",
             "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}", cid],
            capture_output=True, text=True,
        )  # fmt: skip
        return done.stdout.strip()

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise CheckFailed(f"PromQL {expr!r}: {body}")
        return list(body["data"]["result"])

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else float("nan")


def default_services(with_grafana: bool) -> list[str]:
    """The services `up` starts without --profile (docker-compose 1.29 would still pull the
    images of services scaled to 0, so they are named instead)."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return [
        name
        for name, spec in services.items()
        if not spec.get("profiles") and (with_grafana or name != "grafana")
    ]


def image_available(image: str) -> bool:
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0:
        return True
    return subprocess.run(["docker", "pull", image], capture_output=True).returncode == 0


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard panel, Grafana's variables filled in."""
    queries = []
    for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", RATE_WINDOW)
                queries.append((panel["title"], expr.replace("$device", ".*")))
    return queries


def check_provisioning() -> dict[str, Any]:
    """The provisioned datasource uid is the one every panel names; the provider path is where
    compose mounts the dashboards."""
    grafana = ROOT / "deploy" / "grafana"
    datasources = (grafana / "provisioning" / "datasources" / "prometheus.yml").read_text()
    uid = re.search(r"^\s*uid:\s*(\S+)", datasources, re.M)
    provider = (grafana / "provisioning" / "dashboards" / "splitedge.yml").read_text()
    path = re.search(r"^\s*path:\s*(\S+)", provider, re.M)
    compose = COMPOSE_FILE.read_text()
    if not uid or not path or f"./deploy/grafana/dashboards:{path.group(1)}" not in compose:
        raise CheckFailed("grafana provisioning: datasource uid or dashboard path does not match")
    panels = 0
    for file in (grafana / "dashboards").glob("*.json"):
        for panel in json.loads(file.read_text())["panels"]:
            if panel["type"] == "row":
                continue
            panels += 1
            names = {panel["datasource"]["uid"]}
            names |= {t["datasource"]["uid"] for t in panel["targets"]}
            if names != {uid.group(1)}:
                raise CheckFailed(f"panel {panel['title']!r} uses datasource {names}")
    return {"datasource_uid": uid.group(1), "panels": panels}


def wait_for(what: str, condition: Any, timeout: float, every: float = 3.0) -> Any:
    """Poll `condition()` (a bool, or a dict with "ok") until it holds; return its last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last.get("ok") if isinstance(last, dict) else last:
            return last
        time.sleep(every)
    raise CheckFailed(f"{what}: not within {timeout:.0f} s (last: {last})")


def wire_rate(deployment: Deployment, device: str) -> float:
    return deployment.scalar(
        f'sum(rate(splitedge_link_sent_bytes_total{{device="{device}"}}[{RATE_WINDOW}]))'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the deployment up")
    parser.add_argument("--json", type=Path, help="write the summary here too")
    parser.add_argument("--low-mbit", type=float, default=0.4, help="link-1's pinned rate")
    args = parser.parse_args(argv)
    started = time.monotonic()
    summary: dict[str, Any] = {"steps": {}}

    def step(name: str, value: Any) -> None:
        summary["steps"][name] = value
        print(f"[{time.monotonic() - started:6.1f} s] {name}: {json.dumps(value)}", flush=True)

    deployment = Deployment()
    try:
        grafana_image = re.search(r"image:\s*(grafana/\S+)", COMPOSE_FILE.read_text())
        with_grafana = bool(grafana_image) and image_available(grafana_image.group(1))
        step("provisioning", check_provisioning() | {"grafana_started": with_grafana})
        # The default services (profiles such as scale-out stay off); Grafana only if it is here.
        services = default_services(with_grafana)
        deployment.run("up", "-d", "--no-build", *services)
        step("up", services)

        with_health = [s for s in services if s != "grafana" or with_grafana]

        def all_healthy() -> Any:
            states = {s: deployment.health(s) for s in with_health}
            return {"ok": all(v in ("healthy", "running") for v in states.values()), **states}

        step("healthy", wait_for("every service healthy", all_healthy, timeout=420))

        devices = sorted(
            {r["metric"]["device"] for r in deployment.query("up{job=\"device\"}")}
        )

        def flowing() -> Any:
            down = [r["metric"] for r in deployment.query("up == 0")]
            grown = {
                r["metric"]["device"]: round(float(r["value"][1]), 1)
                for r in deployment.query(
                    "sum by (device) (increase(splitedge_device_outcomes_total[30s]))"
                )
            }
            ok = not down and devices and all(grown.get(d, 0) > 0 for d in devices)
            return {"ok": ok, "targets_down": down, "outcomes_30s": grown}

        step("flowing", wait_for("every camera's outcomes growing", flowing, timeout=180))
        by_kind = {
            f"{r['metric']['device']} {r['metric']['kind']}": round(float(r["value"][1]), 2)
            for r in deployment.query(
                "sum by (device, kind) (rate(splitedge_device_outcomes_total[1m]))"
            )
        }
        step("outcomes_per_s", by_kind)

        empty = []
        for title, expr in dashboard_queries():
            if not deployment.query(expr):
                empty.append(title)
        queries = len(dashboard_queries())
        if empty:
            raise CheckFailed(f"dashboard panels without data: {empty}")
        step("dashboard_queries", {"queries": queries, "all_returned_series": True})

        wait_for("cam-1 wire bytes/s", lambda: wire_rate(deployment, "cam-1") > 0, 60)
        before = wire_rate(deployment, "cam-1")
        low = args.low_mbit * 1e6 / 8
        deployment.run("exec", "-T", "link-1", "python3", "-m", "loadtest.netshape", "set",
                       str(args.low_mbit))  # fmt: skip
        time.sleep(25)  # the [20s] window past the change
        pinned = wire_rate(deployment, "cam-1")
        deployment.run("exec", "-T", "link-1", "python3", "-m", "loadtest.netshape", "set",
                       "--unpin")  # fmt: skip
        time.sleep(25)
        after = wire_rate(deployment, "cam-1")
        link = {
            "before_Bps": round(before), "pinned_mbit": args.low_mbit, "pinned_cap_Bps": round(low),
            "pinned_Bps": round(pinned), "unpinned_Bps": round(after),
        }  # fmt: skip
        if not (pinned <= low * 1.1 and pinned < before * 0.7 and after > pinned * 1.5):
            raise CheckFailed(f"cam-1's wire bytes/s did not follow its link: {link}")
        step("live_rate_change", link)
        summary["ok"] = True
    except CheckFailed as exc:
        summary["ok"] = False
        summary["error"] = str(exc)
        print(f"compose-check FAILED: {exc}", file=sys.stderr)
        logs = deployment.run("logs", "--tail", "15", check=False)
        print(logs[-6000:], file=sys.stderr)
    finally:
        if not args.keep:
            deployment.run("down", "-v", "--remove-orphans", check=False)
        summary["wall_s"] = round(time.monotonic() - started, 1)
        print(json.dumps(summary, indent=2))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
