"""The HTTP front door on a real uvicorn port: health, models, bundle download, metrics,
whole-frame inference, JSON errors with the right status codes."""

from __future__ import annotations

import hashlib
import io
import tarfile

import httpx
import numpy as np
import pytest
from PIL import Image

from shared.codecs import CodecId, make_codec
from split_models.runtime import TailRuntime
from tests.edge_server.client import MODEL, assert_same_detections
from tests.edge_server.conftest import a_frame


@pytest.fixture(scope="module")
def http(edge):
    with httpx.Client(base_url=edge.http_url, timeout=60) as client:
        yield client


def test_health_readiness_and_openapi(http) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == [MODEL]
    spec = http.get("/openapi.json").json()
    assert {"/v1/infer", "/v1/models/{name}/bundle", "/metrics", "/readyz"} <= set(spec["paths"])
    assert http.get("/docs").status_code == 200


def test_models_and_manifest(http, bundle_dir) -> None:
    (model,) = http.get("/v1/models").json()["models"]
    assert model["name"] == MODEL and model["tasks"] == ["detection", "classification"]
    assert any(b["id"] == "split-w050" and b["expected_bytes"] > 0 for b in model["branches"])
    manifest = http.get(f"/v1/models/{MODEL}").json()
    assert manifest["files"].keys() >= {"entropy.npz", "tail.pt"}
    missing = http.get("/v1/models/nope")
    assert missing.status_code == 404 and MODEL in missing.json()["error"]
    assert http.get(f"/v1/models/{MODEL}", params={"version": "9"}).status_code == 404


def test_bundle_archive_with_sha256_and_etag(http, bundle_dir) -> None:
    response = http.get(f"/v1/models/{MODEL}/bundle")
    assert response.status_code == 200
    digest = hashlib.sha256(response.content).hexdigest()
    assert response.headers["X-Bundle-SHA256"] == digest
    assert response.headers["ETag"] == f'"{digest}"'
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        names = set(tar.getnames())
        manifest = tar.extractfile(f"{MODEL}/manifest.json").read()
    assert f"{MODEL}/manifest.json" in names and f"{MODEL}/tail.pt" in names
    assert manifest == (bundle_dir / "manifest.json").read_bytes()
    again = http.get(f"/v1/models/{MODEL}/bundle", headers={"If-None-Match": f'"{digest}"'})
    assert again.status_code == 304 and not again.content
    assert http.get(f"/v1/models/{MODEL}/bundle").content == response.content  # deterministic


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_whole_frame_inference_equals_the_teacher(http, bundle_dir, fmt) -> None:
    frame = a_frame(200, 260)
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format=fmt, quality=95)
    response = http.post(
        "/v1/infer",
        params={"model": MODEL},
        content=buffer.getvalue(),
        headers={"Content-Type": f"image/{fmt.lower()}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"]["code"] == "FRAME_OK"
    assert body["branch_id"] == "full-frame"
    assert body["timings"]["batch_size"] == 1
    decoded = np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    (expected,) = TailRuntime.load(bundle_dir).run_images([decoded])
    ours = [
        (
            d["box"]["x_min"],
            d["box"]["y_min"],
            d["box"]["x_max"],
            d["box"]["y_max"],
            d["score"],
            d["label_id"],
        )
        for d in body["detections"]
    ]
    assert_same_detections(ours, [(*d.box, d.score, d.label_id) for d in expected.detections])
    assert [c["label_id"] for c in body["classifications"]] == [
        c.label_id for c in expected.classifications
    ]


def test_whole_frame_for_one_task(http) -> None:
    buffer = io.BytesIO()
    Image.fromarray(a_frame()).save(buffer, format="JPEG")
    body = http.post(
        "/v1/infer",
        params={"model": MODEL, "task": "classification"},
        content=buffer.getvalue(),
        headers={"Content-Type": "image/jpeg"},
    ).json()
    assert body["classifications"] and body["detections"] == []


def test_errors_are_json_with_the_right_status(http, edge) -> None:
    jpeg = make_codec(CodecId.JPEG).encode(a_frame()).strings[0]
    cases = [
        (
            dict(
                params={"model": MODEL},
                content=b"not an image",
                headers={"Content-Type": "image/jpeg"},
            ),
            400,
            "decode",
        ),
        (
            dict(params={"model": MODEL}, content=jpeg, headers={"Content-Type": "text/plain"}),
            400,
            "Content-Type",
        ),
        (
            dict(params={"model": "nope"}, content=jpeg, headers={"Content-Type": "image/jpeg"}),
            404,
            MODEL,
        ),
        (
            dict(
                params={"model": MODEL, "task": "segmentation"},
                content=jpeg,
                headers={"Content-Type": "image/jpeg"},
            ),
            400,
            "segmentation",
        ),
        (
            dict(
                params={"model": MODEL},
                content=b"\xff" * (edge.settings.max_message_bytes + 1),
                headers={"Content-Type": "image/jpeg"},
            ),
            413,
            "at most",
        ),
    ]
    for kwargs, status, text in cases:
        response = http.post("/v1/infer", **kwargs)
        assert response.status_code == status, (kwargs.get("params"), response.text)
        assert text in response.json()["error"]
    assert http.get("/healthz").status_code == 200  # still serving


def test_metrics_expose_counts_stages_batches_and_bytes(http) -> None:
    text = http.get("/metrics").text
    for name in (
        "splitedge_requests_total",
        "splitedge_stage_seconds_bucket",
        "splitedge_pending_frames",
        "splitedge_batch_size_bucket",
        "splitedge_batch_released_total",
        "splitedge_payload_bytes_bucket",
        "splitedge_frames_computed_total",
    ):
        assert name in text, name
    assert 'stage="decode"' in text and 'status="ok"' in text
