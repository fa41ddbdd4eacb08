"""``musicrec-client``: ask a running gateway from the shell.

musicrec-client recommend --artists "Radiohead, Coldplay" -k 5
musicrec-client recommend --user 2
musicrec-client feedback 3f2a... --played "a12,a7" --skipped a3   # what the listener did
musicrec-client similar-users --user 2 -n 5
musicrec-client health          # exit 0 only when SERVING (usable as a health check)
musicrec-client info            # the model version it serves, as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from client._client import DEFAULT_ADDRESS, RecommenderClient
from client.types import (
    FEEDBACK_ACTIONS,
    SCORING_MODES,
    Credentials,
    FeedbackEvent,
    Recommendation,
    RecommenderError,
    SimilarUsers,
)

console = Console()


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [a.strip() for a in text.split(",") if a.strip()]


def _who(args: argparse.Namespace) -> dict:
    return {"user_id": args.user, "artists": _names(args.artists),
            "artist_ids": _names(args.artist_ids)}  # fmt: skip


def recommendation_table(rec: Recommendation, title: str) -> Table:
    """A ranked answer as a rich table (the demo prints it too)."""
    table = Table(title=f"{title} (model version {rec.model_version}, {rec.scoring})")
    for col in ("#", "artist", "id", "score"):
        table.add_column(col, justify="right" if col in {"#", "score"} else "left")
    for i, a in enumerate(rec.artists, 1):
        table.add_row(str(i), a.name, a.id, f"{a.score:.3f}")
    return table


def _recommend(client: RecommenderClient, args: argparse.Namespace) -> int:
    rec = client.recommend(**_who(args), k=args.k, scoring=args.scoring, strict=args.strict,
                           exclude_played=not args.include_played)  # fmt: skip
    if args.json:
        print(json.dumps(asdict(rec), indent=2))
        return 0
    who = f"user {args.user}" if args.user else "a listener of " + (args.artists or args.artist_ids)
    console.print(recommendation_table(rec, f"Top {len(rec.artists)} for {who}"))
    if rec.recommendation_id:
        console.print(f"recommendation id (for feedback): {rec.recommendation_id}")
    if rec.popularity_fallback:
        console.print("[yellow]no known artist in the history: most-listened artists shown[/]")
    if rec.all_played:
        console.print(
            "[yellow]the listener plays almost the whole catalogue: fewer artists than "
            "asked are left unplayed (--include-played ranks played ones too)[/]"
        )
    if rec.unknown_artists:
        more = rec.unknown_artist_count - len(rec.unknown_artists)
        console.print(f"unknown to the model (ignored): {', '.join(rec.unknown_artists)}"
                      + (f" and {more} more" if more > 0 else ""))  # fmt: skip
    return 0


def feedback_events(args: argparse.Namespace) -> list[FeedbackEvent]:
    """One event per artist of ``--played``, ``--skipped``... (ids, or names with --by-name)."""
    key = "name" if args.by_name else "artist_id"
    events = []
    for action in FEEDBACK_ACTIONS:
        for artist in _names(getattr(args, action)) or ():
            plays = args.plays if action == "played" else None
            events.append(FeedbackEvent(action, **{key: artist}, play_count=plays))
    if not events:
        raise ValueError("name at least one artist: --played, --skipped, --saved or --dismissed")
    return events


def _feedback(client: RecommenderClient, args: argparse.Namespace) -> int:
    credits = client.feedback(args.recommendation_id, feedback_events(args))
    if args.json:
        print(json.dumps([asdict(c) for c in credits], indent=2))
        return 0
    for c in credits:
        team = f", team {c.team}" if c.team else ""
        console.print(f"{c.artist_id}: rank {c.rank}, credited to version {c.model_version}{team}")
    return 0


def _similar(client: RecommenderClient, args: argparse.Namespace) -> int:
    result: SimilarUsers = client.similar_users(**_who(args), n=args.n)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return 0
    table = Table(title=f"Similar users (model version {result.model_version})")
    table.add_column("user")
    table.add_column("similarity", justify="right")
    for u in result.users:
        table.add_row(u.user_id, f"{u.similarity:.3f}")
    console.print(table)
    return 0


def _info(client: RecommenderClient, args: argparse.Namespace) -> int:
    info = client.serving_info()
    print(json.dumps(asdict(info), indent=2))
    return 0 if info.model_version else 1


def _health(client: RecommenderClient, args: argparse.Namespace) -> int:
    status = client.health()
    print(status)
    return 0 if status == "SERVING" else 1


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="musicrec-client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-a",
        "--address",
        default=os.environ.get("MUSICREC_GATEWAY", DEFAULT_ADDRESS),
        help="gateway host:port (env MUSICREC_GATEWAY)",
    )
    parser.add_argument("-t", "--timeout", type=float, default=10.0, help="deadline, seconds")
    env = os.environ.get
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=env("MUSICREC_GATEWAY_TLS_CA"),
        help="TLS: the gateway's CA certificate (env MUSICREC_GATEWAY_TLS_CA)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=env("MUSICREC_GATEWAY_TLS_CERT"),
        help="mutual TLS: this client's certificate",
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        default=env("MUSICREC_GATEWAY_TLS_KEY"),
        help="mutual TLS: this client's private key",
    )
    parser.add_argument("--token-file", type=Path, default=env("MUSICREC_GATEWAY_TOKEN_FILE"),
                        help="send the bearer token in this file")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    def listener(p: argparse.ArgumentParser) -> None:
        who = p.add_mutually_exclusive_group(required=True)
        who.add_argument("-u", "--user", help="a known user id")
        who.add_argument("-A", "--artists", help="comma-separated artist names")
        who.add_argument("-I", "--artist-ids", help="comma-separated artist ids")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    r = sub.add_parser("recommend", help="top-k artists for a user or a history",
                       formatter_class=fmt)  # fmt: skip
    listener(r)
    r.add_argument("-k", type=int, default=10, help="how many artists (the gateway caps it)")
    r.add_argument("-s", "--scoring", choices=list(SCORING_MODES), help="server default")
    r.add_argument("--strict", action="store_true", help="error instead of popularity fallback")
    r.add_argument("--include-played", action="store_true", help="keep already-played artists")
    r.set_defaults(func=_recommend)

    f = sub.add_parser("feedback", help="what a listener did with an answer (by its id)",
                       formatter_class=fmt)  # fmt: skip
    f.add_argument("recommendation_id", help="the answer's recommendation id")
    short = {"played": "-P", "skipped": "-S", "saved": "-V", "dismissed": "-D"}
    for action in FEEDBACK_ACTIONS:
        flags = [short[action]] if action in short else []
        f.add_argument(*flags, f"--{action}", help=f"comma-separated artists {action}")
    f.add_argument("-n", "--by-name", action="store_true", help="artists are names, not ids")
    f.add_argument("--plays", type=float, help="play count of each played artist (unset: 1)")
    f.add_argument("--json", action="store_true", help="print JSON instead of lines")
    f.set_defaults(func=_feedback)

    s = sub.add_parser("similar-users", help="most similar known users", formatter_class=fmt)
    listener(s)
    s.add_argument("-n", type=int, default=10, help="how many users (the gateway caps it)")
    s.set_defaults(func=_similar)

    i = sub.add_parser("info", help="the model version the gateway serves; exit 1 if none")
    i.set_defaults(func=_info)

    h = sub.add_parser("health", help="print the gateway's health; exit 0 when SERVING")
    h.set_defaults(func=_health)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 on success, 1 when the gateway answers with an error or is unhealthy, 2 on usage
    errors; messages are one line, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        credentials = Credentials(
            args.tls_ca,
            args.tls_cert,
            args.tls_key,
            args.token_file.read_text().strip() if args.token_file else None,
        )
        with RecommenderClient(args.address, timeout_s=args.timeout,
                               credentials=credentials) as client:  # fmt: skip
            return args.func(client, args)
    except OSError as exc:  # an unreadable certificate, key or token file
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    except RecommenderError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
