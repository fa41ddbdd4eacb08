"""``musicrec``: generate data, train and evaluate models, export, serve, deploy."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from app import (
    data_commands,
    deploy_commands,
    export_commands,
    serve_commands,
    training_commands,
)
from client import RecommenderError
from core.console import console
from core.errors import MusicrecError

VERB_GROUPS = (data_commands, training_commands, export_commands, serve_commands,
               deploy_commands)  # fmt: skip
# Failures a person caused or can fix (a disk full and a permission denied included): one
# line and exit 2, never a traceback.
USER_ERRORS = (MusicrecError, RecommenderError, ValueError, KeyError, OSError)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="musicrec", description=__doc__, formatter_class=fmt)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in VERB_GROUPS:
        group.register(sub, fmt)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        args.func(args)
    except USER_ERRORS as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        console.print(f"[red]error:[/] {msg}", highlight=False)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
