"""benchmarks/plots.py draws every figure from the committed results, and reads quality.json in
both its one-split and its several-seeds layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED = ("latency_concurrency", "scale_out", "version_swap", "rollout", "quality")


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_every_figure_from_the_committed_results(tmp_path: Path) -> None:
    plots.main(["--results", str(plots.RESULTS), "--out", str(tmp_path)])
    for name in EXPECTED:
        assert _is_png(tmp_path / f"{name}.png"), name


def test_committed_pictures_exist() -> None:
    """docs/img holds what the README and docs/ show (re-drawn by `python -m benchmarks.plots`)."""
    for name in EXPECTED:
        assert _is_png(plots.DOCS_IMG / f"{name}.png"), name


def test_missing_results_are_skipped(tmp_path: Path) -> None:
    drawn = plots.draw_all(tmp_path / "nothing", tmp_path / "img")
    assert drawn == dict.fromkeys(EXPECTED)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"ndcg@10": 0.2}, (0.2, None)),
        ({"ndcg@10": {"mean": 0.2, "std": 0.01, "values": [0.19, 0.21]}}, (0.2, 0.01)),
        ({"ndcg@10": {"mean": 0.2}}, (0.2, None)),
        ({"ndcg@10_mean": 0.2, "ndcg@10_std": 0.01}, (0.2, 0.01)),
        ({"mean": {"ndcg@10": 0.2}, "std": {"ndcg@10": 0.01}}, (0.2, 0.01)),
        ({"map@10": 0.1}, None),
    ],
)
def test_metric_layouts(entry: dict, expected: tuple | None) -> None:
    assert plots.metric_value(entry, "ndcg@10") == expected


def test_quality_with_several_seeds(tmp_path: Path) -> None:
    """The layout with top-level ``seeds`` and per-model mean/std draws with error bars."""
    one = json.loads((plots.RESULTS / "quality.json").read_text())

    def spread(section: dict) -> dict:
        return {
            model: {
                metric: {"mean": value, "std": 0.01 * value, "values": [value] * 3}
                if isinstance(value, float)
                else value
                for metric, value in entry.items()
            }
            for model, entry in section.items()
        }

    several = {**one, "seeds": [0, 1, 2], "models": spread(one["models"])}
    if "new_user" in one:
        several["new_user"] = spread(one["new_user"])
    results = tmp_path / "results"
    results.mkdir()
    (results / "quality.json").write_text(json.dumps(several))
    assert plots.plot_quality(results, tmp_path) == tmp_path / "quality.png"
    assert _is_png(tmp_path / "quality.png")


def test_swap_timeline_when_the_benchmark_writes_one(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(plots.RESULTS / "version_swap.json", results)
    data = json.loads((results / "version_swap.json").read_text())
    data["timeline"] = {
        "t_s": list(range(60)),
        "rps": [150.0] * 60,
        "errors": [0] * 60,
        "events": [{"t_s": 10, "action": "deploy", "version": 2}],
    }
    (results / "version_swap.json").write_text(json.dumps(data))
    assert _is_png(plots.plot_version_swap(results, tmp_path))
