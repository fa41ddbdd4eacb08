"""Terminal output shared by the ``musicrec`` command and the benchmarks (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console(width=max(Console().width, 110))
METRIC_COLUMNS = ("precision@10", "recall@10", "map@10", "ndcg@10", "hit@10", "coverage")
_HEADERS = ("P@10", "R@10", "MAP@10", "NDCG@10", "HR@10", "coverage", "train s")


def metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    """A rich table with one row per model and the standard metric columns."""
    table = Table(title=title)
    table.add_column("model", no_wrap=True)
    for col in _HEADERS:
        table.add_column(col, justify="right", no_wrap=True)
    for name, m in rows.items():
        table.add_row(
            name,
            *(f"{m[c]:.4f}" if c in m else "-" for c in METRIC_COLUMNS),
            f"{m.get('train_seconds', 0.0):.1f}",
        )
    return table
