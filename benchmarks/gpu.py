"""The GPU route end to end: Triton's ``gpu`` model configuration, the gateway on CuPy, parity
with onnxruntime on a CPU, and what the GPU serves.

    scripts/gpu_check.sh                              # on a GPU machine (benchmarks/GPU.md)
    .venv/bin/python -m benchmarks.gpu --cpu-dry-run  # here: the same path on a CPU

For each catalogue (HetRec 2011: 1,892 users x 17,632 artists, real plays; Spotify scale:
15,918 users x 290,000 artists, 12.9M plays from the project's generator) a network of the seed
architecture with random weights (the draws of ``benchmarks.common.random_network``, made with
NumPy) is exported without TensorFlow (``export.from_weights``: same layout and scorer graphs),
then:

1. parity of the numeric core on this machine's device (``export.gpu_scorers``: CuPy or
   PyTorch, NumPy in the dry run) against onnxruntime on the CPU, for ``catalogue_scorer`` top-K
   and ``candidate_scorer``;
2. Triton started with ``--model-config-name=gpu`` (``KIND_GPU`` Python-backend instances running
   ``model_gpu.py``) and the gateway with ``--backend gpu``;
3. parity through Triton: ragged groups, mixed ``k`` and masks sent at once (so they are batched),
   each answer compared with onnxruntime on the CPU, and one out-of-range id (INVALID_ARG);
4. load through the gateway (``all_artists`` and ``two_stage``, new listeners' 10-artist
   histories, top 10) at concurrency 1, 8 and 32: end-to-end p50/p99 and requests/s, and from
   Triton's metrics over each run: server compute per request
   (``nv_inference_compute_infer_duration_us`` / requests), queue time per request, average batch
   size (``nv_inference_count`` / ``nv_inference_exec_count``) and GPU utilisation
   (``nv_gpu_utilization``, sampled; ``nvidia-smi`` too where present).

Writes benchmarks/results/gpu.json after every step (a run cut short keeps what it measured);
exits 1 when a parity check fails. ``--cpu-dry-run`` does all of it on a CPU with a small
synthetic catalogue instead of the 290k one, the NumPy runner on a ``KIND_CPU`` variant of the
gpu configuration (``configs/gpu_cpu.pbtxt``) and the gateway on SciPy; it writes
logs/gpu_dryrun.json.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import scipy.sparse as sp
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from benchmarks.common import drive, history_requests
from core.console import console
from core.contract import CANDIDATE_SCORER, CATALOGUE_SCORER, MODELS, ONNX_FILE, SERVED_MODELS
from core.modes import MODES
from core.paths import HETREC_DIR, PROJECT_ROOT
from core.vocabulary import Vocabulary
from export import gpu_scorers
from export.from_weights import Weights, export_weights
from export.triton_config import GPU_RUNNER_MODELS, gpu_config
from gateway.config import GatewayConfig
from serving.gateway_process import GatewayProcess
from serving.processes import free_port
from serving.triton_server import TritonConfig, TritonServer
from training.data import load_hetrec
from training.data.generator import GeneratorConfig, artist_names, generate_play_matrix, user_ids

RESULTS = Path(__file__).parent / "results" / "gpu.json"
DRY_RUN_RESULTS = PROJECT_ROOT / "logs" / "gpu_dryrun.json"
SPOTIFY_SCALE = GeneratorConfig(rows=12_900_000, users=15_918, artists=290_000, communities=200)
DRY_RUN_SCALE = GeneratorConfig(rows=200_000, users=2_000, artists=5_000, communities=24)
MODES_ON_GPU = tuple(m for m, spec in MODES.items() if set(spec.models) <= set(GPU_RUNNER_MODELS))
COUNTS = {1: 200, 8: 400, 32: 800}  # requests per (mode, concurrency)
DRY_RUN_COUNTS = {1: 12, 8: 24, 32: 48}
DRY_RUN_CONFIG = "gpu_cpu"  # the gpu configuration on KIND_CPU instances with the NumPy runner
K = 10
PREPARED_PLAYS = "plays.npz"  # a HetRec directory prepared by --save-hetrec


def random_weights(n_users: int, n_artists: int, seed: int = 0, *, dim: int = 100,
                   hidden: int = 128) -> Weights:  # fmt: skip
    """The weights ``benchmarks.common.random_network`` gives (N(0, 0.1), drawn in the Keras
    model's weight order), without TensorFlow."""
    rng = np.random.default_rng(seed)
    shapes = [(n_users, dim), (n_artists, dim), (2 * dim, hidden), (hidden,), (hidden, 1), (1,)]
    return Weights(*(rng.normal(0, 0.1, s).astype(np.float32) for s in shapes))


def load_catalogue(name: str, hetrec: Path, dry_run: bool) -> tuple[sp.csr_matrix, Vocabulary]:
    if name == "hetrec":
        if (hetrec / PREPARED_PLAYS).is_file():  # from --save-hetrec: no pandas parsing there
            return sp.load_npz(hetrec / PREPARED_PLAYS).tocsr(), Vocabulary.load(hetrec / "vocab")
        data = load_hetrec(hetrec)
        return data.matrix, data.vocab
    cfg = DRY_RUN_SCALE if dry_run else SPOTIFY_SCALE
    plays = generate_play_matrix(cfg)
    n_users, n_artists = plays.shape
    return plays, Vocabulary(tuple(user_ids(n_users, cfg.seed)),
                             tuple(f"a{i}" for i in range(n_artists)),
                             tuple(artist_names(n_artists)))  # fmt: skip


# -- parity ------------------------------------------------------------------------------------


def _groups(rng: np.random.Generator, n_users: int, rows: int, size: int) -> tuple:
    return (rng.integers(0, n_users, (rows, size)),
            rng.random((rows, size)).astype(np.float32))  # fmt: skip


def _top_k_report(got_artists, got_scores, ref_artists, ref_scores) -> dict:
    """Scores compared position by position (both best first: robust to swapped near-ties) and
    the share of each top-K that both agree on."""
    diff = float(np.max(np.abs(got_scores - ref_scores))) if got_scores.size else 0.0
    same = [len(set(a) & set(b)) / max(len(b), 1)
            for a, b in zip(got_artists.tolist(), ref_artists.tolist(), strict=True)]  # fmt: skip
    return {"max_abs_diff": diff, "topk_agreement": float(np.mean(same)) if same else 1.0}


def core_parity(repo: Path, module: gpu_scorers.ArrayModule, seed: int = 0) -> dict:
    """The numeric core on ``module`` against onnxruntime on the CPU, from the same model.onnx."""
    out = {"array_module": module.describe()}
    rng = np.random.default_rng(seed)
    path = repo / CATALOGUE_SCORER / "1" / ONNX_FILE
    scorer, session = gpu_scorers.load(path, module), _session(path)
    users, weights = _groups(rng, scorer.n_users, 8, 10)
    k = rng.integers(1, 101, (8, 1))
    got = scorer.catalogue(users, weights, k)
    ref = session.run(["artists", "scores"], {"users": users, "weights": weights, "k": k})
    out[CATALOGUE_SCORER] = _top_k_report(*got, *ref)
    path = repo / CANDIDATE_SCORER / "1" / ONNX_FILE
    scorer, session = gpu_scorers.load(path, module), _session(path)
    cands = rng.integers(0, scorer.n_artists, (8, 500))
    mask = rng.random((8, 500)) < 0.9
    got = scorer.candidates(users, weights, cands, mask)
    (ref,) = session.run(["scores"], {"users": users, "weights": weights, "candidates": cands,
                                      "mask": mask})  # fmt: skip
    out[CANDIDATE_SCORER] = {
        "max_abs_diff": float(np.max(np.abs(got[mask] - ref[mask]))),
        "masked_are_neg_inf": bool(np.all(np.isneginf(got[~mask]))),
    }
    return out


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _infer(client, model: str, arrays: dict[str, np.ndarray], outputs: list[str]):
    dtypes = {"f": "FP32", "i": "INT64", "b": "BOOL"}
    inputs = []
    for name, a in arrays.items():
        inputs.append(grpcclient.InferInput(name, list(a.shape), dtypes[a.dtype.kind]))
        inputs[-1].set_data_from_numpy(a)
    result = client.infer(model, inputs, model_version="1", client_timeout=120)
    return [result.as_numpy(o) for o in outputs]


def triton_parity(url: str, repo: Path, n: int = 48, seed: int = 1) -> dict:
    """Requests sent to Triton at once (ragged groups, mixed k, masks), each answer against
    onnxruntime on the CPU for that request alone; and one out-of-range id."""
    rng = np.random.default_rng(seed)
    manifest = json.loads((repo / CATALOGUE_SCORER / "1" / "manifest.json").read_text())
    n_users, n_artists = manifest["users"], manifest["artists"]
    jobs = []
    for i in range(n):
        users, weights = _groups(rng, n_users, 1, 1 + i % 10)
        if i % 2:
            jobs.append((CATALOGUE_SCORER, {"users": users, "weights": weights,
                                            "k": rng.integers(1, 101, (1, 1))}))  # fmt: skip
        else:
            c = int(rng.integers(1, 501))
            jobs.append((CANDIDATE_SCORER, {"users": users, "weights": weights,
                                            "candidates": rng.integers(0, n_artists, (1, c)),
                                            "mask": rng.random((1, c)) < 0.9}))  # fmt: skip
    local = threading.local()

    def call(job):
        if not hasattr(local, "client"):
            local.client = grpcclient.InferenceServerClient(url)
        name, arrays = job
        return _infer(local.client, name, arrays, MODELS[name].output_names)

    with cf.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, jobs))
    sessions = {m: _session(repo / m / "1" / ONNX_FILE) for m in GPU_RUNNER_MODELS}
    reports: dict[str, list] = {CATALOGUE_SCORER: [], CANDIDATE_SCORER: []}
    for (name, arrays), got in zip(jobs, answers, strict=True):
        ref = sessions[name].run(MODELS[name].output_names, arrays)
        if name == CATALOGUE_SCORER:
            reports[name].append(_top_k_report(got[0], got[1], ref[0], ref[1]))
        else:
            mask = arrays["mask"]
            ok = bool(np.all(np.isneginf(got[0][~mask])))
            diff = float(np.max(np.abs(got[0][mask] - ref[0][mask]))) if mask.any() else 0.0
            reports[name].append({"max_abs_diff": diff, "topk_agreement": 1.0 if ok else 0.0})
    out = {name: {"requests": len(r), "max_abs_diff": max(x["max_abs_diff"] for x in r),
                  "topk_agreement": min(x["topk_agreement"] for x in r)}
           for name, r in reports.items()}  # fmt: skip
    client = grpcclient.InferenceServerClient(url)
    bad = {"users": np.array([[n_users]]), "weights": np.ones((1, 1), np.float32),
           "k": np.array([[5]])}  # fmt: skip
    try:
        _infer(client, CATALOGUE_SCORER, bad, ["artists"])
        out["out_of_range_id"] = "answered (expected INVALID_ARG)"
    except InferenceServerException as exc:
        out["out_of_range_id"] = "refused: " + str(exc.message())[:120]
    client.close()
    return out


def parity_ok(report: dict) -> bool:
    """Every model within its contract tolerance, every top-K agreeing, masks -inf."""
    for name in GPU_RUNNER_MODELS:
        r = report.get(name, {})
        if not r.get("max_abs_diff", 1.0) <= MODELS[name].parity_tolerance:
            return False
        if r.get("topk_agreement", 1.0) < 1.0 or r.get("masked_are_neg_inf") is False:
            return False
    return "out_of_range_id" not in report or report["out_of_range_id"].startswith("refused")


# -- metrics -----------------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, str], float]:
    """Triton's counters by (metric, model) summed over versions; GPU gauges by (metric, gpu)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):  # (a counter's samples end in _total)
        for s in family.samples:
            key = (family.name, s.labels.get("model") or s.labels.get("gpu_uuid", ""))
            out[key] = out.get(key, 0.0) + s.value
    return out


def triton_delta(before: dict, after: dict, model: str) -> dict:
    d = lambda m: after.get((m, model), 0.0) - before.get((m, model), 0.0)  # noqa: E731
    requests, execs = d("nv_inference_request_success"), d("nv_inference_exec_count")
    return {
        "requests": int(requests),
        "compute_infer_us_per_request": d("nv_inference_compute_infer_duration_us") / requests
        if requests else None,
        "queue_us_per_request": d("nv_inference_queue_duration_us") / requests
        if requests else None,
        "avg_batch_size": d("nv_inference_count") / execs if execs else None,
    }  # fmt: skip


class GpuSampler:
    """GPU utilisation while a load runs: Triton's ``nv_gpu_utilization`` gauge and, where it
    exists, ``nvidia-smi``; every ``interval_s``."""

    def __init__(self, metrics_port: int, interval_s: float = 0.25) -> None:
        self.port, self.interval_s = metrics_port, interval_s
        self.triton: list[float] = []
        self.smi: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._smi = shutil.which("nvidia-smi")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                gauges = [v for (m, _), v in scrape(self.port).items() if m == "nv_gpu_utilization"]
                if gauges:
                    self.triton.append(100.0 * float(np.mean(gauges)))
            except OSError:
                pass
            if self._smi:
                try:
                    text = subprocess.run(
                        [self._smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                        capture_output=True, text=True, timeout=5, check=True,
                    ).stdout  # fmt: skip
                    self.smi.append(float(np.mean([float(x) for x in text.split()])))
                except (OSError, ValueError, subprocess.SubprocessError):
                    pass

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        stats = lambda xs: ({"mean_pct": float(np.mean(xs)), "max_pct": float(np.max(xs)),  # noqa: E731
                             "samples": len(xs)} if xs else None)  # fmt: skip
        return {"nv_gpu_utilization": stats(self.triton), "nvidia_smi": stats(self.smi)}


# -- serving -----------------------------------------------------------------------------------


class StubEnvTriton(TritonServer):
    """Triton whose Python-backend stubs see another virtualenv (``venv``: NumPy < 2 with the
    GPU packages reachable through a .pth file) and libpython's directory."""

    def __init__(self, config: TritonConfig, venv: Path | None, libdir: Path | None) -> None:
        super().__init__(config)
        self.venv, self.libdir = venv, libdir

    def environment(self) -> dict[str, str]:
        env = super().environment()
        if self.venv:
            env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env['PATH']}"
        if self.libdir:
            env["LD_LIBRARY_PATH"] = f"{self.libdir}{os.pathsep}{env.get('LD_LIBRARY_PATH', '')}"
        return env


def write_dry_run_configs(repo: Path) -> None:
    """``configs/gpu_cpu.pbtxt``: the gpu configuration on CPU instances with the NumPy runner."""
    for name in SERVED_MODELS:
        cfg = gpu_config(name, kind="cpu", runner="numpy")
        (repo / name / "configs" / f"{DRY_RUN_CONFIG}.pbtxt").write_text(
            text_format.MessageToString(cfg)
        )


def runners_seen(log: Path) -> list[str]:
    if not log.is_file():
        return []
    found = re.findall(r"musicrec gpu runner: ([^\"\n]*)", log.read_text(errors="replace"))
    return sorted(set(found))


def device_info(dry_run: bool) -> str:
    if dry_run:
        return f"CPU only ({os.cpu_count()} cores): --cpu-dry-run, NumPy runner, KIND_CPU"
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "unknown GPU (no nvidia-smi)"
    query = "--query-gpu=name,driver_version,memory.total"
    text = subprocess.run([smi, query, "--format=csv,noheader"], capture_output=True, text=True,
                          check=False).stdout.strip()  # fmt: skip
    return f"{text}; {os.cpu_count()} CPU cores (load generator, gateway and Triton share them)"


# -- one catalogue -----------------------------------------------------------------------------


class Deadline:
    def __init__(self, budget_s: float) -> None:
        self.end = time.monotonic() + budget_s

    def left(self) -> float:
        return self.end - time.monotonic()


def measure(name: str, label: str, args: argparse.Namespace, deadline: Deadline, save) -> dict:
    """Export, check and load one catalogue; ``save(partial)`` after every step."""
    out: dict = {}
    t0 = time.perf_counter()
    plays, vocab = load_catalogue(name, args.hetrec, args.cpu_dry_run)
    n_users, n_artists = plays.shape
    out["catalogue"] = {"users": n_users, "artists": n_artists, "plays": int(plays.nnz)}
    with tempfile.TemporaryDirectory(prefix=f"gpu-{name}-") as tmp:
        root = Path(tmp)
        repo = root / "model_repository"
        vocab.save(root / "vocab")
        provenance = {"source_run": "benchmark (random weights)"}
        export_weights(random_weights(n_users, n_artists), repo, vocab_dir=root / "vocab",
                       plays=plays, provenance=provenance)  # fmt: skip
        out["export_seconds"] = time.perf_counter() - t0
        console.print(f"{label}: {n_users} users x {n_artists} artists exported in "
                      f"{out['export_seconds']:.0f} s")  # fmt: skip
        module = gpu_scorers.array_module("numpy" if args.cpu_dry_run else "auto")
        out["core_parity"] = core_parity(repo, module)
        console.print(f"{label} core parity: {out['core_parity']}")
        save(out)
        config_name = "gpu"
        if args.cpu_dry_run:
            write_dry_run_configs(repo)
            config_name = DRY_RUN_CONFIG
        logs = root / "logs"
        logs.mkdir()
        metrics_port = free_port()
        triton_cfg = TritonConfig(repo, free_port(), free_port(), metrics_port,
                                  model_config_name=config_name, load_models=SERVED_MODELS,
                                  log_file=logs / "triton.log", ready_timeout_s=300,
                                  extra_args=("--metrics-interval-ms=500",))  # fmt: skip
        triton = StubEnvTriton(triton_cfg, args.triton_venv, args.libpython_dir)
        gateway = GatewayProcess(GatewayConfig(
            port=free_port(), metrics_port=0, repository=repo, triton_url=triton.grpc_url,
            backend="cpu" if args.cpu_dry_run else "gpu", log_json=True,
        ), log_file=logs / "gateway.log")  # fmt: skip
        try:
            triton.start()
            out["triton_config"] = config_name
            out["runners"] = runners_seen(logs / "triton.log")
            out["triton_parity"] = triton_parity(triton.grpc_url, repo)
            console.print(f"{label} Triton parity: {out['triton_parity']}")
            save(out)
            gateway.start(timeout_s=300)
            out["rows"] = {}
            counts = DRY_RUN_COUNTS if args.cpu_dry_run else COUNTS
            for mode in MODES_ON_GPU:
                (model,) = MODES[mode].models
                for conc, n in counts.items():
                    key = f"{mode}_c{conc}"
                    if deadline.left() < 30:
                        out["rows"][key] = {"skipped": "time budget spent"}
                        continue
                    requests = history_requests(plays, vocab.artist_names,
                                                max(conc, n // args.scale), seed=conc)  # fmt: skip
                    before = scrape(metrics_port)
                    with GpuSampler(metrics_port) as sampler:
                        row = asyncio.run(drive(gateway.address, requests, conc, mode, K))
                    row["triton"] = {model: triton_delta(before, scrape(metrics_port), model)}
                    row["gpu_utilization"] = sampler.summary()
                    out["rows"][key] = row
                    t = row["triton"][model]
                    console.print(f"{label} {key}: {row['rps']:.1f} req/s, p50 "
                                  f"{row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, compute "
                                  f"{(t['compute_infer_us_per_request'] or 0) / 1e3:.2f} ms/req, "
                                  f"batch {t['avg_batch_size'] or 0:.1f}")  # fmt: skip
                    save(out)
        finally:
            gateway.stop()
            triton.stop()
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for log in logs.iterdir():
                    shutil.copy2(log, args.keep_logs / f"{name}-{log.name}")
    out["seconds"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="on a CPU: small catalogue, NumPy runner, CPU instances")  # fmt: skip
    parser.add_argument("--hetrec", type=Path, default=HETREC_DIR, help="HetRec 2011 directory")
    parser.add_argument("--triton-venv", type=Path, default=None,
                        help="virtualenv the Python-backend stubs see (NumPy < 2)")  # fmt: skip
    parser.add_argument("--libpython-dir", type=Path, default=None,
                        help="directory of libpython3.X.so.1.0 for the stubs")  # fmt: skip
    parser.add_argument("--catalogues", nargs="+", default=["hetrec", "290k"],
                        choices=["hetrec", "290k"])  # fmt: skip
    parser.add_argument("--scale", type=int, default=1, help="divide request counts by this")
    parser.add_argument("--budget-s", type=float, default=1e9,
                        help="skip load runs that would start after this many seconds")  # fmt: skip
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy Triton/gateway logs")
    parser.add_argument("--save-hetrec", type=Path, default=None, metavar="DIR",
                        help="only write --hetrec's plays and vocabulary to DIR (what the GPU "
                             "machine loads without parsing the data set) and exit")  # fmt: skip
    parser.add_argument("-o", "--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.save_hetrec:
        plays, vocab = load_catalogue("hetrec", args.hetrec, False)
        args.save_hetrec.mkdir(parents=True, exist_ok=True)
        sp.save_npz(args.save_hetrec / PREPARED_PLAYS, plays)
        vocab.save(args.save_hetrec / "vocab")
        console.print(f"wrote {args.save_hetrec}: {plays.shape[0]} users x {plays.shape[1]} "
                      f"artists, {plays.nnz} plays")  # fmt: skip
        return 0
    out_path = args.out or (DRY_RUN_RESULTS if args.cpu_dry_run else RESULTS)
    deadline = Deadline(args.budget_s)
    t0 = time.perf_counter()
    result: dict = {
        "device": device_info(args.cpu_dry_run),
        "dry_run": args.cpu_dry_run,
        "requests": "new listeners: 10 artists of a random listener, by name; top 10",
        "network": "seed architecture, random weights (speed does not depend on training)",
        "catalogues": {},
    }

    def save(name: str, partial: dict) -> None:
        result["catalogues"][name] = partial
        result["total_seconds"] = time.perf_counter() - t0
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2))

    ok = True
    for name in args.catalogues:
        label = "synthetic_small" if name == "290k" and args.cpu_dry_run else name
        partial = measure(name, label, args, deadline, lambda p, label=label: save(label, p))
        save(label, partial)
        for check in ("core_parity", "triton_parity"):
            if check in partial and not parity_ok(partial[check]):
                console.print(f"[red]{label}: {check} FAILED[/red]: {partial[check]}")
                ok = False
    result["parity_ok"] = ok
    save(label, partial)
    console.print(f"wrote {out_path} ({'parity ok' if ok else 'PARITY FAILED'}, "
                  f"{time.perf_counter() - t0:.0f} s)")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
