"""Draw the committed benchmark results as PNGs (matplotlib, Agg backend: no display needed).

    .venv/bin/python -m benchmarks.plots                      # benchmarks/results -> docs/img
    .venv/bin/python -m benchmarks.plots --results DIR --out DIR

Each figure reads one or more ``benchmarks/results/*.json`` files and is skipped, with a line
saying why, when its input is missing. Nothing is measured here: re-run the benchmark that
writes a file, then this script.

* ``latency_concurrency.png``: p50/p99 latency and requests/s against concurrency, each scoring
  mode, each catalogue (``two_stage.json``; ``gateway.json`` as the earlier HetRec run).
* ``scale_out.png``: requests/s of one against two Triton replicas, and requests/failures of the
  kill and swap scenarios (``scale_out.json``).
* ``version_swap.png``: the swaps under load (``version_swap.json``). When the file holds a
  time series (``timeline``: ``t_s``, ``ok``/``rps``, ``errors``, and ``events``) it is drawn as
  requests/s and errors/s over time with each deploy and rollback marked; the committed file
  has only per-step durations, so those are drawn and the title says the series is missing.
* ``quality.png``: NDCG@10 (and MAP@10) per model for known and held-out users
  (``quality.json``), with error bars when the file holds several split seeds (a metric given
  as ``{"mean", "std"}``, or ``<metric>_mean``/``<metric>_std``).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

RESULTS = Path(__file__).resolve().parent / "results"
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
MODES = ("ranked", "two_stage", "all_artists", "pairwise")
COLOURS = {"ranked": "#d62728", "two_stage": "#1f77b4", "all_artists": "#ff7f0e",
           "pairwise": "#2ca02c"}  # fmt: skip
DPI = 110


def _load(results: Path, name: str) -> dict | None:
    path = results / name
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _mode_rows(rows: dict, mode: str) -> list[dict]:
    """The rows ``<mode>_c<N>`` of a benchmark, sorted by concurrency."""
    found = [
        row
        for key, row in rows.items()
        if key.startswith(f"{mode}_c") and key[len(mode) + 2 :].isdigit()
    ]
    return sorted(found, key=lambda r: r["concurrency"])


def _catalogue_label(name: str, catalogue: dict | None) -> str:
    if not catalogue:
        return name
    return f"{name}: {catalogue.get('users', 0):,} users x {catalogue.get('artists', 0):,} artists"


def plot_latency(results: Path, out: Path) -> Path | None:
    """p50/p99 (top) and requests/s (bottom) against concurrency per mode and catalogue."""
    two_stage = _load(results, "two_stage.json")
    gateway = _load(results, "gateway.json")
    panels: list[tuple[str, dict]] = []
    if two_stage:
        names = {"hetrec": "HetRec 2011", "290k": "Spotify scale (synthetic)"}
        for key, title in names.items():
            if key in two_stage and "rows" in two_stage[key]:
                label = _catalogue_label(title, two_stage[key].get("catalogue"))
                panels.append((f"{label}\n(two_stage.json)", two_stage[key]["rows"]))
    if gateway and "rows" in gateway:
        label = _catalogue_label("HetRec 2011, earlier run", gateway.get("catalogue"))
        panels.append((f"{label}\n(gateway.json)", gateway["rows"]))
    if not panels:
        return None
    fig, axes = plt.subplots(
        2, len(panels), figsize=(5.2 * len(panels), 7.5), squeeze=False, sharex=True
    )
    for col, (title, rows) in enumerate(panels):
        lat, rps = axes[0][col], axes[1][col]
        for mode in MODES:
            mode_rows = _mode_rows(rows, mode)
            if not mode_rows:
                continue
            conc = [r["concurrency"] for r in mode_rows]
            colour = COLOURS[mode]
            p50 = [r["p50_ms"] for r in mode_rows]
            lat.plot(conc, p50, "o-", color=colour, label=f"{mode} p50")
            lat.plot(
                conc, [r["p99_ms"] for r in mode_rows], "s--", color=colour, alpha=0.6,
                label=f"{mode} p99",
            )  # fmt: skip
            rps.plot(conc, [r["rps"] for r in mode_rows], "o-", color=colour, label=mode)
        lat.set_title(title, fontsize=9)
        lat.set_yscale("log")
        rps.set_yscale("log")
        lat.set_ylabel("latency (ms, log)")
        rps.set_ylabel("requests/s (log)")
        rps.set_xlabel("concurrent requests")
        for ax in (lat, rps):
            ax.set_xscale("log", base=2)
            ax.set_xticks([1, 8, 32])
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.grid(True, which="both", alpha=0.3)
        lat.legend(fontsize=7, ncol=1)
        rps.legend(fontsize=7)
    device = (two_stage or gateway or {}).get("device", "")
    fig.suptitle(f"Recommend through the gateway and Triton: latency and throughput\n{device}")
    fig.tight_layout()
    return _save(fig, out / "latency_concurrency.png")


def plot_scale_out(results: Path, out: Path) -> Path | None:
    """Requests/s with one against two Triton replicas; requests and failures per scenario."""
    data = _load(results, "scale_out.json")
    if not data:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    throughput = data.get("throughput", {})
    names = [n for n in ("one", "two") if n in throughput]
    for i, name in enumerate(names):
        runs = throughput[name]
        values = [r["rps"] for r in runs]
        xs = [i + (j - (len(values) - 1) / 2) * 0.3 for j in range(len(values))]
        left.bar(xs, values, width=0.28, color="#1f77b4" if name == "one" else "#ff7f0e")
        for x, v in zip(xs, values, strict=True):
            left.text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ticks = [f"{n} Triton replica{'s' if n == 'two' else ''}" for n in names]
    left.set_xticks(range(len(names)), ticks)
    left.set_ylabel("requests/s (each bar one run)")
    left.set_title(f"Throughput at concurrency {data.get('concurrency', '?')}", fontsize=10)
    scenarios = [
        ("replica_kill", "a Triton replica\nSIGKILLed"),
        ("swap_two_replicas", "deploy swap\non two replicas"),
        ("gateway_kill", "a gateway\nSIGKILLed"),
    ]
    present = [(key, label) for key, label in scenarios if isinstance(data.get(key), dict)]
    xs = range(len(present))
    requests = [data[key].get("requests", 0) for key, _ in present]
    failed = [data[key].get("failed", 0) for key, _ in present]
    right.bar([x - 0.2 for x in xs], requests, width=0.4, label="requests", color="#1f77b4")
    right.bar([x + 0.2 for x in xs], failed, width=0.4, label="failed", color="#d62728")
    for x, r, f in zip(xs, requests, failed, strict=True):
        right.text(x - 0.2, r, f"{r:,}", ha="center", va="bottom", fontsize=8)
        right.text(x + 0.2, f, f"{f}", ha="center", va="bottom", fontsize=9, color="#d62728")
    right.set_xticks(list(xs), [label for _, label in present], fontsize=8)
    right.set_title("Under load, with a failure or a deploy", fontsize=10)
    right.legend(fontsize=8)
    fig.suptitle(f"Scale out (scale_out.json)\n{data.get('device', '')}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out / "scale_out.png")


def plot_version_swap(results: Path, out: Path) -> Path | None:
    """The swap timeline when the file holds one; else each step's durations."""
    data = _load(results, "version_swap.json")
    if not data:
        return None
    timeline = data.get("timeline")
    if isinstance(timeline, dict) and timeline.get("t_s"):
        fig = _swap_timeline(data, timeline)
    else:
        fig = _swap_steps(data)
    fig.tight_layout()
    return _save(fig, out / "version_swap.png")


def _swap_timeline(data: dict, timeline: dict) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(10, 4.2))
    t = timeline["t_s"]
    ok = timeline.get("rps") or timeline.get("ok") or []
    errors = timeline.get("errors") or [0] * len(t)
    ax.plot(t[: len(ok)], ok, color="#1f77b4", label="requests/s answered")
    ax.plot(t[: len(errors)], errors, color="#d62728", label="errors/s")
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("per second")
    for event in timeline.get("events", []):
        ax.axvline(event["t_s"], color="grey", linestyle=":")
        label = f"{event.get('action', '')} {event.get('version', '')}".strip()
        ax.text(event["t_s"], ax.get_ylim()[1] * 0.95, label, rotation=90, va="top", fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(
        f"Version swaps under load: {data.get('requests', 0):,} requests, "
        f"{data.get('failed', 0)} failed (version_swap.json)",
        fontsize=10,
    )
    return fig


def _swap_steps(data: dict) -> plt.Figure:
    steps = data.get("steps", [])
    fig, ax = plt.subplots(figsize=(10, 4.2))
    labels = [f"{s['action']}\n{s.get('previous', '?')} -> {s.get('version', '?')}" for s in steps]
    xs = range(len(steps))
    command = [s.get("command_seconds", 0) for s in steps]
    switch = [s.get("switch_seconds", 0) for s in steps]
    ax.bar([x - 0.2 for x in xs], command, width=0.4, label="command (validate, load, unload)")
    ax.bar([x + 0.2 for x in xs], switch, width=0.4, label="command -> first answer from it")
    for x, c, s in zip(xs, command, switch, strict=True):
        ax.text(x - 0.2, c, f"{c:.1f}", ha="center", va="bottom", fontsize=8)
        ax.text(x + 0.2, s, f"{s:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(
        f"Swaps under {data.get('concurrency', '?')} concurrent clients: "
        f"{data.get('requests', 0):,} requests, {data.get('failed', 0)} failed, "
        f"p50 {data.get('p50_ms', math.nan):.0f} ms, p99 {data.get('p99_ms', math.nan):.0f} ms\n"
        "(version_swap.json holds no time series yet: per-step durations only)",
        fontsize=10,
    )
    return fig


def metric_value(entry: dict, metric: str) -> tuple[float, float | None] | None:
    """``(mean, std or None)`` of one metric of one model, in any layout quality.json has had.

    ``{"ndcg@10": 0.21}``; ``{"ndcg@10": {"mean": 0.21, "std": 0.004, ...}}``;
    ``{"ndcg@10_mean": 0.21, "ndcg@10_std": 0.004}``; ``{"mean": {...}, "std": {...}}``.
    """
    value = entry.get(metric)
    if isinstance(value, int | float):
        return float(value), None
    if isinstance(value, dict) and isinstance(value.get("mean"), int | float):
        std = value.get("std")
        return float(value["mean"]), float(std) if isinstance(std, int | float) else None
    if isinstance(entry.get(f"{metric}_mean"), int | float):
        std = entry.get(f"{metric}_std")
        return float(entry[f"{metric}_mean"]), float(std) if isinstance(std, int | float) else None
    means, stds = entry.get("mean"), entry.get("std")
    if isinstance(means, dict) and isinstance(means.get(metric), int | float):
        std = stds.get(metric) if isinstance(stds, dict) else None
        return float(means[metric]), float(std) if isinstance(std, int | float) else None
    return None


def _quality_groups(data: dict) -> list[tuple[str, dict]]:
    """(title, {model: entry}) for known users and for held-out (new) users."""
    models = data.get("models", {})
    known = {name: e for name, e in models.items() if not name.endswith("_new_user")}
    new = dict(data.get("new_user", {}))
    for name, entry in models.items():  # dnn_new_user, dnn_two_stage_new_user live in models
        if name.endswith("_new_user"):
            new[name.removesuffix("_new_user")] = entry
    return [("known users (20% holdout)", known), ("held-out users (via similar users)", new)]


def plot_quality(results: Path, out: Path) -> Path | None:
    """NDCG@10 and MAP@10 per model as bars, with error bars over split seeds when present."""
    data = _load(results, "quality.json")
    if not data or not data.get("models"):
        return None
    metrics = ("ndcg@10", "map@10")
    groups = _quality_groups(data)
    order = list(groups[0][1])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    any_std = False
    for ax, (title, entries) in zip(axes, groups, strict=True):
        names = [n for n in order if n in entries] + [n for n in entries if n not in order]
        width = 0.8 / len(metrics)
        for i, metric in enumerate(metrics):
            values = [metric_value(entries[n], metric) for n in names]
            means = [v[0] if v else 0.0 for v in values]
            stds = [v[1] if v and v[1] is not None else 0.0 for v in values]
            has_std = any(v and v[1] is not None for v in values)
            any_std = any_std or has_std
            xs = [x + (i - (len(metrics) - 1) / 2) * width for x in range(len(names))]
            ax.bar(
                xs, means, width=width, label=metric.upper(),
                yerr=stds if has_std else None, capsize=3 if has_std else 0,
            )  # fmt: skip
            if metric == metrics[0]:
                for x, m, sd in zip(xs, means, stds, strict=True):  # above the error bar
                    ax.text(x, m + sd + 0.004, f"{m:.3f}", ha="center", va="bottom", fontsize=7,
                            rotation=90)  # fmt: skip
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    top = max(ax.get_ylim()[1] for ax in axes)
    axes[0].set_ylim(0, top * 1.2)  # room for the value labels and the legend
    axes[0].set_ylabel("score at 10")
    axes[0].legend(fontsize=8, ncol=len(metrics), loc="upper left")
    dataset = data.get("dataset", {})
    seeds = data.get("seeds")
    if isinstance(seeds, list) and seeds:
        spread = f"mean ± std over {len(seeds)} split seeds {seeds}"
    elif any_std:
        spread = "mean ± std over split seeds"
    else:
        spread = f"one split (seed {data.get('protocol', {}).get('seed', '?')}), no error bars"
    fig.suptitle(
        f"Ranking quality on {dataset.get('name', 'HetRec 2011')} "
        f"({dataset.get('users', 0):,} users x {dataset.get('artists', 0):,} artists): {spread}",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, out / "quality.png")


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_rollout(results: Path, out: Path) -> Path | None:
    """Requests/s and errors/s over time for the canary (promoted) and the failing canary
    (aborted by the watcher), with deploy, promote and abort marked (``rollout.json``)."""
    data = _load(results, "rollout.json")
    scenarios = [(k, data[k]) for k in ("canary", "bad_canary")
                 if data and isinstance(data.get(k), dict) and data[k].get("timeline")]  # fmt: skip
    if not scenarios:
        return None
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6.2 * len(scenarios), 4.2), squeeze=False)
    for ax, (name, scenario) in zip(axes[0], scenarios, strict=True):
        t, answered, failed = (list(col) for col in zip(*scenario["timeline"], strict=True))
        ax.plot(t, _per_second(t, answered), color="#1f77b4", label="requests/s answered")
        ax.plot(t, _per_second(t, failed), color="#d62728", label="errors/s at the client")
        for when, label in scenario.get("events", []):
            ax.axvline(when, color="grey", linestyle=":")
            ax.text(when, ax.get_ylim()[1] * 0.97, label, rotation=90, va="top", fontsize=8)
        failures = scenario.get("failed", scenario.get("client_failed", 0))
        ax.set_title(f"{name.replace('_', ' ')}: {scenario.get('requests', 0):,} requests, "
                     f"{failures} failed", fontsize=10)  # fmt: skip
        ax.set_xlabel("seconds since the load started")
        ax.set_ylabel("per second")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="lower right")
    device = data.get("device", "")
    fig.suptitle(f"Canary rollouts under load (rollout.json)\n{device}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out / "rollout.png")


def _per_second(t: list[float], cumulative: list[float]) -> list[float]:
    """Rates between consecutive samples of a running count."""
    return [(cumulative[i] - cumulative[i - 1]) / (t[i] - t[i - 1]) if i else cumulative[0] / t[0]
            for i in range(len(t))]  # fmt: skip


PLOTS: dict[str, Callable[[Path, Path], Path | None]] = {
    "latency_concurrency": plot_latency,
    "scale_out": plot_scale_out,
    "version_swap": plot_version_swap,
    "rollout": plot_rollout,
    "quality": plot_quality,
}


def draw_all(results: Path = RESULTS, out: Path = DOCS_IMG) -> dict[str, Path | None]:
    """Every figure whose input exists; ``{name: path or None when skipped}``."""
    return {name: plot(results, out) for name, plot in PLOTS.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="benchmarks/results")
    parser.add_argument("--out", type=Path, default=DOCS_IMG, help="where the PNGs go (docs/img)")
    args = parser.parse_args(argv)
    for name, path in draw_all(args.results, args.out).items():
        print(f"{name}: {path}" if path else f"{name}: skipped (its results file is missing)")


if __name__ == "__main__":
    main()
