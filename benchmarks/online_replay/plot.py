"""``docs/img/quality_gate.png``: the quality-gated canary's timeline: each side's online hit
rate since the watch began (the replay's tally every half second as lines, the watcher's polls
of the gateway's counters as dots), and the gate's always-valid confidence that the canary
differs, with the load and the abort marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

IMAGE = Path(__file__).resolve().parents[2] / "docs" / "img" / "quality_gate.png"


def _rates(ax, gate: dict) -> None:
    series = [row for row in gate["replay_series"] if row[2] and row[4]]
    t = [row[0] for row in series]
    for (hits, lists), color, label in (
        ((1, 2), "tab:blue", f"serving (version {gate['serving_version']})"),
        ((3, 4), "tab:red", f"canary {gate['percent']:g}% (version {gate['canary_version']})"),
    ):  # fmt: skip
        ax.plot(t, [row[hits] / row[lists] for row in series], color=color, label=label)
    polls = [p for p in gate["timeline"] if p["canary_hit_rate"] is not None]
    for key, color in (("serving_hit_rate", "tab:blue"), ("canary_hit_rate", "tab:red")):
        ax.plot([p["t"] for p in polls], [p[key] for p in polls], "o", color=color, ms=5)
    ax.plot([], [], "o", color="grey", label="the watcher's polls (gateway counters)")
    ax.set_ylabel("online hit rate since the watch began")


def _confidence(ax, gate: dict) -> None:
    polls = gate["timeline"]
    ax.plot([p["t"] for p in polls], [p["confidence"] for p in polls], "o-", color="black",
            label="confidence the canary differs (1 - p)")  # fmt: skip
    ax.axhline(1 - gate["alpha"], color="grey", ls=":", label=f"1 - alpha = {1 - gate['alpha']:g}")
    ax.set_ylabel("always-valid confidence")
    ax.set_ylim(0, 1.05)


def draw(gate: dict, path: Path = IMAGE) -> Path:
    """Draw ``online.json``'s ``quality_gate`` to ``path``."""
    fig, (rates, conf) = plt.subplots(2, 1, figsize=(8, 5.4), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})  # fmt: skip
    _rates(rates, gate)
    _confidence(conf, gate)
    aborted = gate.get("worse_canary_aborted_s")
    for ax in (rates, conf):
        ax.axvline(gate["canary_loaded_s"], color="grey", ls="--", lw=0.8)
        if aborted is not None:
            ax.axvline(aborted, color="tab:red", lw=1.5)
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", fontsize=8)
    loaded = gate["canary_loaded_s"]
    rates.set_xlim(loaded - 1.5, (aborted or gate["timeline"][-1]["t"]) + 1.5)
    top = rates.get_ylim()[1]
    conf.set_xlabel(f"seconds since deploy --canary (dashed: Triton has loaded the canary, "
                    f"{loaded:.1f} s, and the watch begins)")  # fmt: skip
    if aborted is not None:
        rates.annotate(f" aborted at {aborted:.1f} s", (aborted, top), ha="left", va="top",
                       fontsize=9, color="tab:red")  # fmt: skip
    rates.set_title("A worse canary under the quality gate (benchmarks/online.py, HetRec replay)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
