"""``musicrec export``: a trained run as the next version of the Triton model repository."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.console import console
from core.contract import SERVED_MODELS
from core.paths import DEFAULT_REPOSITORY


def _export(args: argparse.Namespace) -> None:
    from export.repository import export_run  # TensorFlow: only when exporting

    result = export_run(args.run_dir, args.repository)
    pair = result.parity["pair_scorer"]
    console.print(
        f"exported {args.run_dir} as version {result.version} of {' and '.join(SERVED_MODELS)} "
        f"in {args.repository} (parity: max |diff| {pair.max_abs_diff:.1e} on "
        f"{pair.pairs:,} pairs)"
    )


def register(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    x = sub.add_parser(
        "export", help="export a seed/dnn run to the Triton model repository", formatter_class=fmt
    )
    x.add_argument("run_dir", type=Path)
    x.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    x.set_defaults(func=_export)
