"""The committed stubs in shared/wire/ are exactly what proto/ generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.codecs import CodecId
from shared.wire import pb

ROOT = Path(__file__).resolve().parents[2]
WIRE = ROOT / "shared" / "wire"


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = sorted(p.name for p in tmp_path.glob("*_pb2*"))
    assert generated == ["splitedge_pb2.py", "splitedge_pb2.pyi", "splitedge_pb2_grpc.py"]
    for name in generated:
        assert (WIRE / name).read_text() == (tmp_path / name).read_text(), (
            f"shared/wire/{name} is stale: run `python scripts/gen_protos.py`"
        )


def test_codec_ids_are_the_wire_enum() -> None:
    wire_names = {v.name.removeprefix("CODEC_") for v in pb.Codec.DESCRIPTOR.values if v.number}
    assert wire_names == {c.name for c in CodecId}
    for codec in CodecId:
        assert pb.Codec.Value("CODEC_" + codec.name) == codec.value


def test_request_carries_what_the_protocol_promises() -> None:
    request = pb.InferRequest(
        stream_id="cam0",
        frame_id=7,
        model_name="demo",
        branch_id="split-w0.5",
        latent=pb.Latent(codec=pb.CODEC_FACTORIZED_ANS, shape=[4, 8, 8], strings=[b"ab", b""]),
        original_size=pb.ImageSize(width=640, height=480),
        deadline_unix_ns=123,
    )
    decoded = pb.InferRequest.FromString(request.SerializeToString())
    assert decoded.WhichOneof("payload") == "latent"
    assert list(decoded.latent.strings) == [b"ab", b""]
    assert list(decoded.latent.shape) == [4, 8, 8]


def test_frame_error_codes_are_the_wire_frame_codes() -> None:
    from shared import errors

    expected = {
        errors.InvalidRequest: pb.FRAME_INVALID_ARGUMENT,
        errors.UnknownModel: pb.FRAME_NOT_FOUND,
        errors.DeadlineMissed: pb.FRAME_DEADLINE_EXCEEDED,
        errors.Overloaded: pb.FRAME_RESOURCE_EXHAUSTED,
        errors.Unauthenticated: pb.FRAME_UNAUTHENTICATED,
        errors.ShuttingDown: pb.FRAME_UNAVAILABLE,
    }
    for error, code in expected.items():
        assert error.code == code, error
