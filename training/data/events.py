"""Plays from the gateway's event log (``--events DIR``), read beside the base data.

The log is SQLite segments (``gateway/event_log.py`` writes them; this module reads the same
files, in the directory and its ``worker-<i>/`` subdirectories, without importing the
gateway). Each PLAYED feedback event becomes a play of the artist
by the listener the gateway logged, ``play_count`` plays (1 when unset):

* ``user:<id>``: that user of the base data (their plays add up), or a new user ``<id>`` when
  the base data does not list them;
* ``history:<hash>``: a new listener (the hash of the history they sent), a new user.

Artists the base vocabulary does not know are skipped and counted (a retrained model has no
column for them). The merged plays then go through the same filters and split as the base
data, so the split still seals test plays from training (``tests/test_no_test_leak.py``).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.contract import MAX_PLAYS
from training.data.interactions import Interactions, Vocabulary

log = logging.getLogger(__name__)
# The gateway's file names and table (gateway/event_log.py; tests check they agree)
SEGMENT_GLOB = "events-*.sqlite"
_SEGMENT = re.compile(r"events-(\d{8})\.sqlite$")
PLAYED_QUERY = "SELECT listener, artist_id, play_count FROM feedback WHERE action = 'played'"
USER_PREFIX, HISTORY_PREFIX = "user:", "history:"


def read_played(directory: Path) -> tuple[pd.DataFrame, int]:
    """PLAYED events of every segment in ``directory``: a frame of ``user``, ``artist_id``,
    ``plays``, and how many segments were read. ``FileNotFoundError`` when it is no directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"event log not found: {directory} is not a directory")
    # with --workers N each worker writes its own worker-<i>/ below the directory
    files = sorted(p for p in directory.rglob(SEGMENT_GLOB) if _SEGMENT.search(p.name))
    rows: list[tuple] = []
    for path in files:
        conn = sqlite3.connect(path)  # read-write: recovers a killed writer's WAL
        try:
            rows += conn.execute(PLAYED_QUERY).fetchall()
        except sqlite3.DatabaseError as exc:
            log.warning("event-log segment %s skipped: %s", path, exc)
        finally:
            conn.close()
    frame = pd.DataFrame(rows, columns=["listener", "artist_id", "plays"])
    frame["user"] = [_user(k) for k in frame["listener"]]
    frame["plays"] = frame["plays"].fillna(1.0).astype(np.float64)
    return frame[["user", "artist_id", "plays"]], len(files)


def _user(listener: str) -> str:
    """A logged listener key as a user id: ``user:<id>`` is ``<id>``; a history keeps its key."""
    return listener[len(USER_PREFIX) :] if listener.startswith(USER_PREFIX) else listener


def merge_events(data: Interactions, directory: Path) -> tuple[Interactions, dict[str, int]]:
    """``data`` with the log's PLAYED events added as plays (see the module); new users are
    appended after the base users. Returns the merged data and a report of what was added."""
    frame, n_segments = read_played(directory)
    artist_col = frame["artist_id"].map(data.vocab.artist_index())
    known = artist_col.notna().to_numpy()
    kept = frame[known]
    user_index = data.vocab.user_index()
    new_users = sorted(set(kept["user"]) - set(user_index))
    user_index.update({u: data.vocab.n_users + i for i, u in enumerate(new_users)})
    rows = kept["user"].map(user_index).to_numpy(np.int64)
    cols = artist_col[known].to_numpy(np.int64)
    shape = (data.vocab.n_users + len(new_users), data.vocab.n_artists)
    added = sp.csr_matrix((kept["plays"].to_numpy(), (rows, cols)), shape=shape)
    base = sp.vstack([data.matrix.astype(np.float64),
                      sp.csr_matrix((len(new_users), shape[1]))]).tocsr()  # fmt: skip
    merged = (base + added).tocsr()
    merged.data = np.minimum(merged.data, MAX_PLAYS)
    vocab = Vocabulary(data.vocab.user_ids + tuple(new_users), data.vocab.artist_ids,
                       data.vocab.artist_names)  # fmt: skip
    report = {"segments": n_segments, "played_events": len(frame), "plays_added": len(kept),
              "skipped_unknown_artists": int((~known).sum()), "new_users": len(new_users),
              "users": int(kept["user"].nunique())}  # fmt: skip
    if report["skipped_unknown_artists"]:
        log.warning("event log: %d played events name artists the base data does not know; "
                    "skipped", report["skipped_unknown_artists"])  # fmt: skip
    # new users come after the base ones: the base's tag assignments keep their indices
    result = Interactions(sp.csr_matrix(merged, dtype=np.float32), vocab, data.source, data.tags)
    return result, report
