"""Where the gateway's own time goes: py-spy samples the gateway process under load.

    .venv/bin/python -m benchmarks.profile_gateway                 # ranked, HetRec, ~1 min
    .venv/bin/python -m benchmarks.profile_gateway --mode all_artists
    .venv/bin/python -m benchmarks.profile_gateway --svg docs/img/gateway_flame_after.svg

HetRec's real plays are exported as ``benchmarks/catalogues.py`` does (a network with random
weights, a ranker of the production size, ALS factors); Triton and the gateway run as in the
demo, and new listeners' 10-artist histories are sent by a steady closed loop at
``--concurrency`` (8) while ``py-spy record`` samples the gateway for ``--seconds`` (then
again, for the flame graph ``--svg``, when asked). The
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

from benchmarks.catalogues import export_catalogue
from benchmarks.common import history_requests
from benchmarks.process_cpu import sample_group
from benchmarks.steady_load import LoadShape, history_messages, run_point
from core.console import console
from gateway.config import GatewayConfig
from serving.processes import free_port
from serving.stack import Stack, StackConfig, serving_stack

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


def _record(stack: Stack, requests: list, args: argparse.Namespace, out: Path,
            fmt: str) -> dict:  # fmt: skip
    """py-spy samples the gateway for ``args.seconds`` while the load runs; the load's point."""
    spy = subprocess.Popen([str(PY_SPY), "record", "-p", str(stack.gateway.process.pid),
                            "-d", str(args.seconds), "-f", fmt, "-r", "200", "-o", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    shape = LoadShape(args.concurrency, seconds=args.seconds - 2, min_requests=1, warmup_s=1)
    servers = {"gateway": lambda: sample_group(stack.gateway.process.pid)}
    point = asyncio.run(run_point(stack.gateway.address, requests, shape, servers))
    if spy.wait() != 0:
        raise SystemExit(f"py-spy failed ({spy.returncode}); ptrace may be forbidden")
    return point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", default="ranked")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--svg", type=Path, help="also write a flame graph here")
    parser.add_argument("-o", "--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not PY_SPY.is_file():
        parser.error(f"{PY_SPY} not found: run scripts/setup.sh (py-spy is in requirements.lock)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        exported = export_catalogue("hetrec", root)
        cfg = StackConfig(exported.repository, free_port(), free_port(), free_port(),
                          gateway=GatewayConfig(port=free_port(), metrics_port=0, backend="cpu"),
                          log_dir=root / "logs")  # fmt: skip
        histories = history_requests(exported.plays, exported.vocab.artist_names, 300, seed=3)
        requests = history_messages(histories, args.mode)
        with serving_stack(cfg) as stack:
            raw = root / "profile.txt"
            point = _record(stack, requests, args, raw, "raw")
            profile = summarise(raw)
            if args.svg:
                args.svg.parent.mkdir(parents=True, exist_ok=True)
                _record(stack, requests, args, args.svg, "flamegraph")
    result = {"mode": args.mode, "catalogue": "HetRec (random weights)",
              "concurrency": args.concurrency, "load": point, **profile}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"{point['rps']:.0f} req/s, gateway {point['gateway_cpu_ms']:.2f} ms CPU per "
                  "request")  # fmt: skip
    for row in result["top"]:
        console.print(f"{row['share']:6.1%}  {row['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
