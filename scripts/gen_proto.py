"""Generate the Python gRPC code for proto/musicrec/v1/*.proto into musicrec/v1/.

    .venv/bin/python scripts/gen_proto.py            # regenerate in place
    .venv/bin/python scripts/gen_proto.py --out DIR  # generate elsewhere (freshness test)

The generated files are committed, so installing the project needs no protoc; tests/test_proto.py
fails when they are stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"


def generate(out: Path) -> list[Path]:
    """Run grpc_tools.protoc over every .proto file; returns the files written."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    written = []
    for proto in protos:
        package_dir = out / proto.parent.relative_to(PROTO_ROOT)
        for level in [package_dir, *package_dir.parents]:  # make every level a package
            if level == out:
                break
            (level / "__init__.py").touch()
        written += sorted(package_dir.glob(f"{proto.stem}_pb2*"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
