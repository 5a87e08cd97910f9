"""The scale-out deployment files: Kubernetes manifests valid against the Kubernetes schemas (the
`kubernetes-validate` package ships them; no cluster, no network), kustomizations that point at
files that exist, configs inside the manifests that the daemons themselves accept, and one
balancer config for loopback, compose and Kubernetes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.lb.loopback import CONFIG, haproxy_binary
from device_client.config import load_settings
from edge_server.settings import EdgeSettings
from shared.wire import pb

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests claim: native gRPC probes (GA 1.27), preStop `sleep` (1.30).
KUBERNETES_VERSION = "1.30"
NOT_RESOURCES = {"kustomization.yaml", "prometheus-adapter-rules.yaml"}
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SplitInference"].full_name


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def resources() -> list[tuple[Path, dict[str, Any]]]:
    found = [
        (path, doc)
        for path in sorted(K8S.rglob("*.yaml"))
        if path.name not in NOT_RESOURCES
        for doc in documents(path)
    ]
    assert len(found) >= 12, [str(p) for p, _ in found]
    return found


def base(kind: str, name: str) -> dict[str, Any]:
    for _, doc in resources():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in {K8S}")


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)


@pytest.mark.parametrize(
    ("path", "doc"),
    [pytest.param(p, d, id=f"{p.relative_to(K8S)}:{d['kind']}") for p, d in resources()],
)
def test_every_manifest_validates_against_the_kubernetes_schema(
    path: Path, doc: dict[str, Any]
) -> None:
    # strict: an unknown or misspelt field fails too, not only a wrong type
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomizations_name_files_that_exist_and_patch_what_the_base_defines() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        folder = kustomization.parent
        for entry in spec.get("resources", []):
            assert (folder / entry).exists(), f"{kustomization}: {entry} does not exist"
        for generator in spec.get("configMapGenerator", []):
            for item in generator.get("files", []):
                assert (folder / item.split("=")[-1]).is_file(), f"{kustomization}: {item}"
        for patch in spec.get("patches", []):
            (target,) = documents(folder / patch["path"])
            base(target["kind"], target["metadata"]["name"])  # patches something real


def test_the_k8s_balancer_config_is_the_balancer_config() -> None:
    # kustomize reads nothing above its folder, so base/ holds a copy; it must not drift.
    assert (K8S / "base" / "haproxy.cfg").read_text() == CONFIG.read_text(), (
        "deploy/k8s/base/haproxy.cfg differs from deploy/lb/haproxy.cfg: "
        "cp deploy/lb/haproxy.cfg deploy/k8s/base/haproxy.cfg"
    )


def test_the_edge_deployment_env_is_valid_edge_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    edge = container(base("Deployment", "splitedge-edge"), "edge")
    secret = base("Secret", "splitedge-token")["stringData"]
    for var in os.environ:
        if var.startswith("SPLITEDGE_"):
            monkeypatch.delenv(var)
    for item in edge["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        monkeypatch.setenv(item["name"], secret[ref["key"]] if ref else item["value"])
    settings = EdgeSettings()
    assert settings.tokens == ["replace-me"]
    ports = {p["name"]: p["containerPort"] for p in edge["ports"]}
    assert (settings.grpc_port, settings.http_port) == (ports["grpc"], ports["http"])
    assert settings.host == "0.0.0.0"
    assert settings.torch_threads == int(edge["resources"]["limits"]["cpu"])  # one per core
    # Probes ask the service the edge registers; readiness flips with a drain.
    for probe in ("startupProbe", "readinessProbe"):
        assert edge[probe]["grpc"] == {"port": ports["grpc"], "service": SERVICE_NAME}
    grace = base("Deployment", "splitedge-edge")["spec"]["template"]["spec"]
    assert grace["terminationGracePeriodSeconds"] > settings.drain_seconds + 3
    live = edge["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > grace["terminationGracePeriodSeconds"]
    mounts = {m["mountPath"] for m in edge["volumeMounts"]}
    assert all(any(str(b).startswith(m) for m in mounts) for b in settings.bundle)


def test_the_device_configmap_is_a_valid_device_config(tmp_path: Path) -> None:
    daemonset = base("DaemonSet", "splitedge-device")
    device = container(daemonset, "device")
    config = tmp_path / "device.yaml"
    config.write_text(base("ConfigMap", "splitedge-device")["data"]["device.yaml"])
    settings = load_settings(config)
    assert settings.edge.target == "splitedge-lb:50051"
    assert settings.bundle.url == "http://splitedge-lb:8080"
    mounts = {m["name"]: m["mountPath"] for m in device["volumeMounts"]}
    assert settings.edge.token_file is not None
    assert str(settings.edge.token_file.parent) == mounts["token"]
    assert str(settings.state_dir) == mounts["state"]
    assert mounts["camera"] == settings.source.uri  # type: ignore[union-attr]
    assert daemonset["spec"]["template"]["spec"]["nodeSelector"] == {"splitedge.io/camera": "true"}
    assert device["args"][-1] == f"/etc/splitedge/{config.name}"


@pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_config_as_compose_and_kubernetes_run_it(tmp_path: Path) -> None:
    binary = haproxy_binary()
    assert binary is not None
    lb = container(base("Deployment", "splitedge-lb"), "haproxy")
    env = {e["name"]: e.get("value", "") for e in lb["env"]}
    in_cluster = env["SPLITEDGE_LB_EDGE_HOST"].replace("$(POD_NAMESPACE)", "splitedge")
    # HAProxy's resolver does not search: the name must be the headless Service's full name.
    headless = base("Service", "splitedge-edge-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert in_cluster == "splitedge-edge-headless.splitedge.svc.cluster.local"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    in_compose = compose["services"]["edge-lb"]["environment"]["SPLITEDGE_LB_EDGE_HOST"]
    for host in (in_compose, in_cluster):
        env = os.environ | {
            "SPLITEDGE_LB_EDGE_HOST": host,
            "SPLITEDGE_LB_ADMIN_SOCKET": str(tmp_path / "admin.sock"),
        }
        done = subprocess.run(
            [binary, "-c", "-f", str(CONFIG)], env=env, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "warning" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr


def test_the_compose_profile_runs_replicas_behind_the_same_config() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    replica, balancer = services["edge-replica"], services["edge-lb"]
    for service in (replica, balancer, services["cam-lb"]):
        assert service["profiles"] == ["scale-out"]
    assert "ports" not in replica  # only the balancer is published; replicas scale freely
    assert balancer["environment"]["SPLITEDGE_LB_EDGE_HOST"] == "edge-replica"
    assert "./deploy/lb/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in balancer["volumes"]
    bundles = json.loads(replica["environment"]["SPLITEDGE_BUNDLE"])
    assert all(b.startswith("/bundles/") for b in bundles)
    assert "./bundles:/bundles:ro" in replica["volumes"]  # one directory for every replica
    if shutil.which("docker-compose"):
        done = subprocess.run(
            ["docker-compose", "--profile", "scale-out", "config", "-q"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
