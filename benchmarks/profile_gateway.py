"""Where the gateway's own time goes: py-spy samples the gateway process under load.

    .venv/bin/python -m benchmarks.profile_gateway                 # two_stage, HetRec, ~1 min
    .venv/bin/python -m benchmarks.profile_gateway --mode all_artists

A network of the seed architecture with random weights is exported over HetRec's real plays;
Triton and the gateway run as in the demo, and new listeners' 10-artist histories are sent one
at a time (concurrency 1) while ``py-spy record`` samples the gateway for ``--seconds``. The
event loop's samples (the thread that runs every request's Python) are summed by function,
inclusive, and the top rows are written to ``benchmarks/results/gateway_profile.json`` with the
requests/s and latency measured meanwhile. The gRPC library's own threads (completion-queue
polling) are counted apart: their samples are native code waiting or working.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.common import drive, history_requests, random_network
from core.console import console
from core.paths import HETREC_DIR
from export.repository import export_network
from gateway.config import GatewayConfig
from serving.processes import free_port
from serving.stack import StackConfig, serving_stack
from training.data import load_hetrec

RESULTS = Path(__file__).parent / "results" / "gateway_profile.json"
PY_SPY = Path(sys.executable).with_name("py-spy")


def summarise(raw: Path, top: int = 30) -> dict:
    """Inclusive share of the event loop's samples per function (``file:function``)."""
    inclusive: Counter[str] = Counter()
    loop = other = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if frames[0].startswith("_bootstrap"):  # a thread of grpc's or the executor's
            other += int(count)
            continue
        loop += int(count)
        seen = set()
        for frame in frames:
            name, _, where = frame.partition(" (")
            key = f"{where.split(':')[0]}:{name}"
            if key not in seen:
                inclusive[key] += int(count)
                seen.add(key)
    rows = [{"function": k, "share": v / loop} for k, v in inclusive.most_common(top)]
    return {"event_loop_samples": loop, "other_thread_samples": other, "top": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", default="two_stage")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("-o", "--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not PY_SPY.is_file():
        parser.error(f"{PY_SPY} not found: run scripts/setup.sh (py-spy is in requirements.lock)")
    data = load_hetrec(HETREC_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data.vocab.save(root / "vocab")
        export_network(random_network(*data.matrix.shape), root / "repo",
                       vocab_dir=root / "vocab", plays=data.matrix,
                       provenance={"source_run": "benchmark (random weights)"})  # fmt: skip
        cfg = StackConfig(root / "repo", free_port(), free_port(), free_port(),
                          gateway=GatewayConfig(port=free_port(), metrics_port=0, backend="cpu"),
                          log_dir=root / "logs")  # fmt: skip
        with serving_stack(cfg) as stack:
            requests = history_requests(data.matrix, data.vocab.artist_names, 300, seed=3)
            asyncio.run(drive(stack.gateway.address, requests, 1, args.mode))  # warm
            raw = root / "profile.txt"
            spy = subprocess.Popen([str(PY_SPY), "record", "-p", str(stack.gateway.process.pid),
                                    "-d", str(args.seconds), "-f", "raw", "-r", "200",
                                    "-o", str(raw)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
            runs = []
            while spy.poll() is None:
                runs.append(asyncio.run(drive(stack.gateway.address, requests, 1, args.mode)))
            if spy.returncode != 0:
                raise SystemExit(f"py-spy failed ({spy.returncode}); ptrace may be forbidden")
            profile = summarise(raw)
    result = {"mode": args.mode, "catalogue": "HetRec (random weights)", "concurrency": 1,
              "load_runs": runs, **profile}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for row in result["top"]:
        console.print(f"{row['share']:6.1%}  {row['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
