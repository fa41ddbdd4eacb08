"""Streaming loader for the Kaggle "Spotify Playlists" CSV (Pichl, Zangerle & Specht, 2015).

The original file has the header ``"user_id", "artistname", "trackname", "playlistname"``, every
field in double quotes, backslash escapes, and a few malformed rows (stray quotes that run a
field past the end of its line, or the wrong number of fields). Such rows are skipped and
counted, never fatal. The file is read record by record and reduced to integer codes in chunks,
so the 1.2 GB / 12.9M-row original loads in well under 4 GB of memory.

Re-saved copies (pandas' minimal quoting, ``""`` doubling, a mangled header) parse too.
"""

from __future__ import annotations

import collections
import csv
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from training.data.interactions import Interactions, Vocabulary
from training.data.playlist_tags import playlist_tag_assignments

log = logging.getLogger(__name__)

COLUMNS = ("user_id", "artistname", "trackname", "playlistname")
_LINE_BUFFER = 256  # lines kept to re-parse after a record swallowed several lines
MAX_LINE_CHARS = 64 * 1024  # a longer "line" is not a playlist row: skipped, never held whole


class SpotifyDialect(csv.Dialect):
    """The original file: all fields quoted, ``\\`` escapes, a space after each comma."""

    delimiter = ","
    quotechar = '"'
    escapechar = "\\"
    doublequote = True
    skipinitialspace = True
    lineterminator = "\n"
    quoting = csv.QUOTE_MINIMAL
    strict = True


@dataclass
class LoadReport:
    """What the loader saw: rows kept, rows skipped and why."""

    lines: int = 0
    records: int = 0
    malformed: int = 0
    empty_fields: int = 0
    invalid_utf8: int = 0  # rows whose user or artist has bytes that are not UTF-8 (skipped)
    long_lines: int = 0  # lines over MAX_LINE_CHARS (skipped; also counted as malformed)
    header: bool = False
    malformed_lines: list[int] = field(default_factory=list)  # first few, 1-based

    def note_malformed(self, line_no: int) -> None:
        self.malformed += 1
        if len(self.malformed_lines) < 20:
            self.malformed_lines.append(line_no)

    def as_dict(self) -> dict[str, object]:
        return {
            "lines": self.lines,
            "records": self.records,
            "malformed": self.malformed,
            "empty_fields": self.empty_fields,
            "invalid_utf8": self.invalid_utf8,
            "long_lines": self.long_lines,
            "header": self.header,
            "malformed_lines": self.malformed_lines,
        }


def _is_header(fields: list[str]) -> bool:
    normalised = tuple(re.sub(r'[\s"\\]', "", f).lower() for f in fields)
    return normalised == COLUMNS


class _RememberingLines:
    """Iterates over a file's lines, remembering the last few for re-parsing."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.recent: collections.deque[str] = collections.deque(maxlen=_LINE_BUFFER)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.recent.append(line)
        return line


def _parse_single_line(line: str) -> list[str] | None:
    try:
        return next(csv.reader([line], SpotifyDialect))
    except (csv.Error, StopIteration):
        return None


def iter_records(lines: Iterable[str], report: LoadReport) -> Iterator[tuple[str, str, str, str]]:
    """Yield ``(user_id, artistname, trackname, playlistname)`` for each well-formed row.

    A record that fails to parse, has the wrong field count, or runs past the end of its line
    (an unbalanced quote) is counted in ``report.malformed``; the lines such a record swallowed
    are re-parsed one by one so that a single stray quote costs one row, not many.
    Rows with an empty user id or artist name are counted in ``report.empty_fields``.
    """
    source = _RememberingLines(lines)
    reader = csv.reader(source, SpotifyDialect)
    first = True
    while True:
        start = reader.line_num
        try:
            fields: list[str] | None = next(reader)
        except StopIteration:
            break
        except csv.Error:
            fields = None
        span = reader.line_num - start
        candidates: list[tuple[int, list[str] | None]]
        if fields is not None and span == 1:
            candidates = [(start + 1, fields)]
        else:
            # Malformed: the first line is lost; the others it swallowed get a second chance.
            report.note_malformed(start + 1)
            swallowed = list(source.recent)[-span + 1 :] if span > 1 else []
            report.malformed += max(0, span - 1 - len(swallowed))  # beyond the buffer
            candidates = [
                (start + 2 + i, _parse_single_line(line)) for i, line in enumerate(swallowed)
            ]
        for line_no, rec in candidates:
            if first:
                first = False
                if rec is not None and _is_header(rec):
                    report.header = True
                    continue
            if rec is None or len(rec) != 4:
                report.note_malformed(line_no)
                continue
            user, artist, track, playlist = (f.strip() for f in rec)
            if not user or not artist:
                report.empty_fields += 1
                continue
            if not (_valid_text(user) and _valid_text(artist)):
                report.invalid_utf8 += 1  # not merged with a look-alike under U+FFFD
                continue
            report.records += 1
            yield user, artist, track, playlist
    report.lines = reader.line_num


def _valid_text(text: str) -> bool:
    """False when decoding met bytes that are not UTF-8 (kept as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def bounded_lines(fh, report: LoadReport, limit: int = MAX_LINE_CHARS) -> Iterator[str]:
    """The file's lines, each read at most ``limit`` characters at a time: a longer line is
    counted and replaced by a blank one (a malformed row), never held in memory whole."""
    while line := fh.readline(limit + 1):
        if len(line) > limit and not line.endswith("\n"):
            report.long_lines += 1
            while (rest := fh.readline(limit + 1)) and not rest.endswith("\n"):
                pass
            line = "\n"
        yield line


class _Coder:
    """Assigns dense integer codes to string keys in first-seen order."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def encode(self, keys: list[str]) -> np.ndarray:
        codes = self.codes
        out = np.empty(len(keys), np.int32)
        for i, k in enumerate(keys):
            c = codes.get(k)
            if c is None:
                c = codes[k] = len(codes)
            out[i] = c
        return out

    def sorted_keys_and_remap(self) -> tuple[list[str], np.ndarray]:
        """Keys in sorted order, and old code -> new code."""
        keys = list(self.codes)
        order = sorted(range(len(keys)), key=keys.__getitem__)
        remap = np.empty(len(keys), np.int32)
        remap[order] = np.arange(len(keys), dtype=np.int32)
        return [keys[i] for i in order], remap


def load_spotify_playlists(
    path: Path | str, *, chunk_rows: int = 1_000_000, progress: bool = False,
    playlist_tags: bool = False,
) -> tuple[Interactions, LoadReport]:  # fmt: skip
    """Load the Spotify Playlists CSV into a user x artist matrix of track counts.

    Each kept row adds one play to (user_id, artistname). Artists are keyed by name (the file
    has no artist ids). With ``playlist_tags`` the words of each row's playlist name become the
    artist's tags by that user (``training/data/playlist_tags.py``). Returns the interactions
    and a :class:`LoadReport`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Spotify Playlists CSV not found: {path}")
    report = LoadReport()
    users, artists, playlists = _Coder(), _Coder(), _Coder()
    u_parts: list[np.ndarray] = []
    a_parts: list[np.ndarray] = []
    p_parts: list[np.ndarray] = []
    buf_u: list[str] = []
    buf_a: list[str] = []
    buf_p: list[str] = []

    def flush() -> None:
        u_parts.append(users.encode(buf_u))
        a_parts.append(artists.encode(buf_a))
        p_parts.append(playlists.encode(buf_p))
        buf_u.clear(), buf_a.clear(), buf_p.clear()

    size = path.stat().st_size
    with (
        path.open("r", encoding="utf-8", errors="surrogateescape", newline="") as fh,
        tqdm(total=size, unit="B", unit_scale=True, disable=not progress, desc=path.name) as bar,
    ):
        records = iter_records(bounded_lines(fh, report), report)
        for n, (user, artist, _track, playlist) in enumerate(records, 1):
            buf_u.append(user)
            buf_a.append(artist)
            if playlist_tags:
                buf_p.append(playlist)
            if n % chunk_rows == 0:
                flush()
                bar.update(fh.buffer.tell() - bar.n)
        flush()
        bar.update(size - bar.n)

    user_keys, u_remap = users.sorted_keys_and_remap()
    artist_keys, a_remap = artists.sorted_keys_and_remap()
    rows = u_remap[np.concatenate(u_parts)]
    cols = a_remap[np.concatenate(a_parts)]
    matrix = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)),
        shape=(len(user_keys), len(artist_keys)),
    )
    matrix.sum_duplicates()
    vocab = Vocabulary(tuple(user_keys), tuple(artist_keys), tuple(artist_keys))
    if report.malformed or report.empty_fields or report.invalid_utf8:
        log.warning("%s: skipped %d malformed rows (%d over-long lines), %d rows with an empty "
                    "user or artist and %d with bytes that are not UTF-8", path.name,
                    report.malformed, report.long_lines, report.empty_fields,
                    report.invalid_utf8)  # fmt: skip
    tags = None
    if playlist_tags:
        tags = playlist_tag_assignments(rows, cols, np.concatenate(p_parts), list(playlists.codes))
    return Interactions(matrix, vocab, f"spotify:{path}", tags), report
