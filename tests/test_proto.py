"""The committed gRPC code is what the .proto file generates today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)  # fmt: skip
    generated = sorted((tmp_path / "musicrec" / "v1").glob("*_pb2*"))
    assert [p.name for p in generated] == [
        "recommender_pb2.py", "recommender_pb2.pyi", "recommender_pb2_grpc.py",
    ]  # fmt: skip
    for path in generated:
        committed = ROOT / "musicrec" / "v1" / path.name
        assert (
            committed.read_text() == path.read_text()
        ), f"{committed} is stale: run scripts/gen_proto.py"
