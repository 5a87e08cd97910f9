"""Overload, memory bounds and a fuzz run: the server refuses what it cannot take, says why,
and keeps serving."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np
import pytest

from shared.wire import pb, pb_grpc
from tests.edge_server.client import FrameEncoder
from tests.edge_server.conftest import a_frame, edge_settings, start_edge

ACCEPTABLE = {
    pb.FRAME_OK,
    pb.FRAME_INVALID_ARGUMENT,
    pb.FRAME_NOT_FOUND,
    pb.FRAME_DEADLINE_EXCEEDED,
}


@pytest.fixture(scope="module")
def encoder(bundle_dir) -> FrameEncoder:
    return FrameEncoder(bundle_dir)


def test_overload_refuses_with_retry_hint_while_admitted_frames_complete(
    bundle_dir, encoder
) -> None:
    settings = edge_settings(bundle_dir, max_pending=2, max_batch_size=1, warmup=False)
    running = start_edge(settings)
    request = encoder.request(a_frame(480, 640))
    peak = {"pending": 0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak["pending"] = max(peak["pending"], running.runtime.pending)
            time.sleep(0.001)

    async def flood() -> list[tuple[grpc.StatusCode, str | None]]:
        async with grpc.aio.insecure_channel(running.grpc_target) as channel:
            client = pb_grpc.SplitInferenceStub(channel)

            async def one() -> tuple[grpc.StatusCode, str | None]:
                call = client.Infer(request, timeout=120)
                try:
                    await call
                except grpc.aio.AioRpcError as err:
                    trailing = dict(err.trailing_metadata() or ())
                    return err.code(), trailing.get("retry-after-ms")
                return grpc.StatusCode.OK, None

            return await asyncio.gather(*(one() for _ in range(40)))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        outcomes = asyncio.run(flood())
    finally:
        sampling.set()
        sampler.join()
        running.stop()
    codes = [code for code, _ in outcomes]
    assert len(codes) == 40
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    refused = [hint for code, hint in outcomes if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert refused and all(hint is not None and int(hint) >= 10 for hint in refused)
    assert codes.count(grpc.StatusCode.OK) >= 3
    # Queued + computing frames never exceed the queue bound plus one batch: memory is bounded.
    assert peak["pending"] <= settings.max_pending + settings.max_batch_size
    assert running.runtime_metric("splitedge_requests_total", status="resource_exhausted") == len(
        refused
    )


def mutations(valid: pb.InferRequest, rng: np.random.Generator, count: int):
    """Malformed variants of a valid request: bytes, shapes, codecs, names, sizes, tasks."""
    for frame_id in range(count):
        request = pb.InferRequest()
        request.CopyFrom(valid)
        request.frame_id = frame_id
        kind = rng.integers(0, 11)
        if kind == 0:
            request.latent.strings[0] = rng.bytes(int(rng.integers(0, 64)))
        elif kind == 1:
            cut = int(rng.integers(0, len(valid.latent.strings[0])))
            request.latent.strings[0] = valid.latent.strings[0][:cut]
        elif kind == 2:
            del request.latent.shape[:]
            request.latent.shape.extend(
                int(v) for v in rng.integers(0, 2**31, size=rng.integers(0, 5))
            )
        elif kind == 3:
            request.latent.codec = int(rng.choice([0, 2, 3, 4, 5, 6, 99, 2**20]))
        elif kind == 4:
            request.branch_id = rng.choice(["", "local", "skip", "jpeg-q90", "x" * 300])
        elif kind == 5:
            request.model_name = rng.choice(["", "nope", "demo-shapes\0", "../etc"])
        elif kind == 6:
            request.ClearField("latent")
            if rng.random() < 0.5:
                request.image.codec = int(rng.choice([4, 5, 6, 1, 77]))
                request.image.data = rng.bytes(int(rng.integers(0, 256)))
        elif kind == 7:
            request.input_size.height = int(rng.integers(0, 100_000))
            request.original_size.width = 0
        elif kind == 8:
            request.tasks.append(int(rng.integers(0, 10)))
        elif kind == 9:
            request.latent.strings.append(rng.bytes(8))
            if rng.random() < 0.5:
                request.latent.strings[1] = b"\xff" * 16  # escape stream that never ends
        else:
            request.model_version = rng.choice(["0", "2", "latest"])
        yield request


def test_fuzz_thousands_of_malformed_frames_leave_the_server_serving(edge, encoder) -> None:
    valid = encoder.request(a_frame(120, 160), width=0.25)
    rng = np.random.default_rng(7)
    count = 2000
    client = pb_grpc.SplitInferenceStub(grpc.insecure_channel(edge.grpc_target))
    answers = list(client.Stream(mutations(valid, rng, count), timeout=600))
    assert [a.frame_id for a in answers] == list(range(count))  # each answered once, in order
    codes = [a.status.code for a in answers]
    assert set(codes) <= ACCEPTABLE, {pb.FrameCode.Name(c) for c in set(codes) - ACCEPTABLE}
    assert codes.count(pb.FRAME_INVALID_ARGUMENT) > count // 3
    assert all(a.status.message for a in answers if a.status.code != pb.FRAME_OK)
    # Unary calls with the same garbage: statuses, never a crash.
    for request in mutations(valid, np.random.default_rng(8), 200):
        try:
            client.Infer(request, timeout=30)
        except grpc.RpcError as err:
            assert err.code() in {
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.NOT_FOUND,
            }, err.details()
    assert client.Infer(valid, timeout=30).status.code == pb.FRAME_OK


def test_http_overload_is_429_with_retry_after(bundle_dir) -> None:
    import httpx

    from shared.codecs import CodecId, make_codec

    running = start_edge(edge_settings(bundle_dir, max_pending=1, max_batch_size=1, warmup=False))
    jpeg = make_codec(CodecId.JPEG).encode(a_frame(480, 640)).strings[0]

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=running.http_url, timeout=120) as http:
            return await asyncio.gather(
                *(
                    http.post(
                        "/v1/infer",
                        params={"model": "demo-shapes"},
                        content=jpeg,
                        headers={"Content-Type": "image/jpeg"},
                    )
                    for _ in range(20)
                )
            )

    try:
        responses = asyncio.run(flood())
    finally:
        running.stop()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1 and "queued" in refused.json()["error"]
