"""Bearer tokens on both front doors, TLS on both ports, message limits."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.wire import pb, pb_grpc
from tests.edge_server.client import MODEL, FrameEncoder
from tests.edge_server.conftest import a_frame, edge_settings, start_edge
from tests.tls import self_signed

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def encoder(bundle_dir) -> FrameEncoder:
    return FrameEncoder(bundle_dir)


@pytest.fixture(scope="module")
def guarded_edge(bundle_dir):
    running = start_edge(edge_settings(bundle_dir, tokens=[TOKEN, "other"], warmup=False))
    yield running
    running.stop()


def test_grpc_refuses_missing_and_wrong_tokens_before_any_work(guarded_edge, encoder) -> None:
    client = pb_grpc.SplitInferenceStub(grpc.insecure_channel(guarded_edge.grpc_target))
    request = encoder.request(a_frame())
    for metadata in (None, (("authorization", "Bearer nope"),), (("authorization", TOKEN),)):
        with pytest.raises(grpc.RpcError) as err:
            client.Infer(request, metadata=metadata, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            list(client.Stream(iter([request]), metadata=metadata, timeout=10))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            client.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert guarded_edge.runtime_metric("splitedge_requests_total") == 0  # nothing processed
    good = (("authorization", f"Bearer {TOKEN}"),)
    assert client.Infer(request, metadata=good, timeout=30).status.code == pb.FRAME_OK
    other = (("authorization", "Bearer other"),)
    assert [r.status.code for r in client.Stream(iter([request]), metadata=other, timeout=30)] == [
        pb.FRAME_OK
    ]
    # Probes carry no token.
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(guarded_edge.grpc_target))
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1


def test_http_refuses_missing_and_wrong_tokens(guarded_edge) -> None:
    with httpx.Client(base_url=guarded_edge.http_url, timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
            for path in ("/v1/models", "/metrics", f"/v1/models/{MODEL}/bundle"):
                response = http.get(path, headers=headers)
                assert response.status_code == 401, path
                assert "token" in response.json()["error"]
                assert response.headers["WWW-Authenticate"] == "Bearer"
            refused = http.post("/v1/infer", params={"model": MODEL}, content=b"x", headers=headers)
            assert refused.status_code == 401
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert http.get("/v1/models", headers=good).status_code == 200


def test_oversized_latent_is_invalid_argument_naming_the_size(bundle_dir, encoder) -> None:
    running = start_edge(edge_settings(bundle_dir, max_message_bytes=32768, warmup=False))
    try:
        client = pb_grpc.SplitInferenceStub(grpc.insecure_channel(running.grpc_target))
        request = encoder.request(a_frame())
        request.latent.strings[0] = request.latent.strings[0] + b"\0" * 65536
        with pytest.raises(grpc.RpcError) as err:
            client.Infer(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 32768" in err.value.details()
        huge = pb.InferRequest(model_name=MODEL, branch_id="split-w100")
        huge.latent.strings.append(b"\0" * (1 << 21))  # past gRPC's own cap
        with pytest.raises(grpc.RpcError) as err:
            client.Infer(huge, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert client.Infer(encoder.request(a_frame(120, 160)), timeout=30).status.code == 0
    finally:
        running.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


def test_tls_on_both_ports(bundle_dir, certificate, encoder) -> None:
    cert, key = certificate
    running = start_edge(
        edge_settings(bundle_dir, tls_cert=cert, tls_key=key, tokens=[TOKEN], warmup=False)
    )
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        channel = grpc.secure_channel(running.grpc_target, credentials)
        client = pb_grpc.SplitInferenceStub(channel)
        answer = client.Infer(
            encoder.request(a_frame()),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
            timeout=30,
        )
        assert answer.status.code == pb.FRAME_OK
        with pytest.raises(grpc.RpcError):  # plaintext to a TLS port fails
            pb_grpc.SplitInferenceStub(grpc.insecure_channel(running.grpc_target)).ListModels(
                pb.ListModelsRequest(), timeout=5
            )
        assert running.http_url.startswith("https://")
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=running.http_url, verify=trust, timeout=30) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
        with pytest.raises(httpx.ConnectError), httpx.Client(timeout=5) as plain:
            plain.get(running.http_url)  # our self-signed cert is not trusted by default
    finally:
        running.stop()
