"""Regenerate the Python stubs in shared/wire/ from proto/ (the one source of truth).

Usage: python scripts/gen_protos.py [--out DIR]

grpcio-tools writes absolute imports (`import splitedge_pb2`); the stubs live inside the
`shared.wire` package, so they are rewritten to relative imports. The test
`tests/shared/test_wire_stubs.py` runs this into a temporary folder and fails when the committed
stubs differ.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTOS = [PROTO_ROOT / "splitedge" / "v1" / "splitedge.proto"]
DEFAULT_OUT = ROOT / "shared" / "wire"


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc  # dev dependency: only the generator needs it

    out_dir.mkdir(parents=True, exist_ok=True)
    for proto in PROTOS:
        # -I at the proto's own folder keeps the generated module flat (splitedge_pb2.py).
        args = [
            "grpc_tools.protoc",
            f"-I{proto.parent}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(proto),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")
    written = sorted(out_dir.glob("*_pb2*.py*"))
    for path in written:
        text = path.read_text()
        fixed = re.sub(r"^import (\w+_pb2) as", r"from . import \1 as", text, flags=re.M)
        path.write_text(fixed)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
