"""Every figure README.md quotes is the one in the benchmark JSON it comes from, rounded as
printed: a rerun that moves a figure fails here until the README says the new one."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NUMBER_WORDS = {3: "three", 4: "four", 5: "five"}


def _readme() -> str:
    """README.md as one line of prose (line breaks and runs of spaces as one space)."""
    return re.sub(r"\s+", " ", (ROOT / "README.md").read_text(encoding="utf-8"))


def _json(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def _percent_above(ratio: float) -> str:
    return f"{(ratio - 1) * 100:.1f}%"


def test_the_quality_figures_are_quality_json():
    quality = _json("quality.json")
    known = quality["models"]["dnn_ranked"]["ndcg@10"]
    new = quality["new_user"]["dnn_ranked"]["ndcg@10"]
    seeds = NUMBER_WORDS.get(len(quality["seeds"]), str(len(quality["seeds"])))
    expected = (
        f"on each of {seeds} splits: NDCG@10 {known['mean']:.4f} ± {known['std']:.4f} for known "
        f"users and {new['mean']:.4f} ± {new['std']:.4f} for new listeners, "
        f"{_percent_above(quality['served_vs_ease_known'])} and "
        f"{_percent_above(quality['served_vs_ease_new'])} above EASE"
    )
    assert expected in _readme()


def test_the_cost_figures_are_cost_json():
    summary = _json("cost.json")["summary"]
    expected = (
        f"costs the gateway {summary['ranked.hetrec.c8.gateway_cpu_ms']:.1f} ms and Triton "
        f"{summary['ranked.hetrec.c8.triton_cpu_ms']:.1f} ms of CPU at concurrency 8 "
        f"({summary['ranked.hetrec.c8.rps']:.0f} requests/s)"
    )
    assert expected in _readme()


def test_the_readme_quotes_no_other_measured_figure():
    """Figures with a unit (ms, %, requests/s) appear only in the sentences checked above, so a
    new one cannot slip in unchecked."""
    quoted = re.findall(r"\d[\d.,]*\s?(?:ms|%|requests/s)", _readme())
    assert len(quoted) == 5, quoted  # 7.7%, 6.2%, 2.6 ms, 2.0 ms, 368 requests/s


def test_every_result_file_is_written_by_a_benchmark():
    """A file under benchmarks/results/ is named by the script that writes it (no orphan figures
    that no rerun would update)."""
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "benchmarks").glob("*.py"))
    for result in RESULTS.iterdir():
        assert result.name in sources or f'"{result.stem}"' in sources, result.name
