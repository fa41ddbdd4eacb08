"""Terminal output shared by the ``musicrec`` command and the benchmarks (rich)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
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


@contextlib.contextmanager
def step(description: str, enabled: bool = True) -> Iterator[None]:
    """A spinner with the elapsed time while a step without a known length runs, then one line
    with its duration; nothing when ``enabled`` is false (library use, tests)."""
    if not enabled:
        yield
        return
    t0 = time.perf_counter()
    if console.is_terminal:  # a log file gets the duration line only
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            progress.add_task(description, total=None)
            yield
    else:
        yield
    console.print(f"[green]✓[/] {description} ({time.perf_counter() - t0:.1f} s)")
