"""The event log: every impression and feedback event, durable, bounded and rotated, for
retraining (``musicrec train --events DIR``, ``training/data/events.py``).

**Format: SQLite segment files in WAL mode** (``events-00000001.sqlite``, ...), tables
``impressions`` and ``feedback`` (:data:`SCHEMA`). A transaction is in the write-ahead log
before ``COMMIT`` returns, so a SIGKILLed gateway loses only what it had not committed yet: at
most one flush interval (``--events-flush-s``) of events, plus the time of one write.
``synchronous=NORMAL`` keeps that against a process crash; a power loss may also lose the last
commits (``FULL`` would fsync each one). Small appends are cheap (a few WAL pages a commit),
and any tool reads a segment (the ``sqlite3`` shell, pandas, DuckDB), even while it is written.
Parquet would lose its open row group on a SIGKILL (the footer is written at close) and cannot
take small appends without rewriting the file or writing many tiny ones.

**Bounds.** A segment ends at the first commit that takes it past ``segment_rows`` rows; the
log keeps at most ``max_segments`` (the oldest deleted), so it holds at most about
``max_segments x segment_rows`` rows. A restarted gateway starts a new segment.

**One writer.** Recommend and Feedback only put a row on a bounded queue (no I/O on the event
loop); one thread commits what waits there every ``flush_s``. A full queue drops the row, a
failed write (a full disk, an unwritable directory) drops the batch, each counted in
``musicrec_gateway_events_dropped_total{reason}``: the log degrades, the RPCs never fail. The
thread is supervised: its death is logged with its cause, counted in
``musicrec_gateway_task_restarts_total{task="event_log"}``, shown by
``musicrec_gateway_events_writer_up`` 0, and it is started again after a pause.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.feedback import Credit, Event, EventSink, Impression
from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)
SEGMENT_GLOB = "events-*.sqlite"
_SEGMENT = re.compile(r"events-(\d{8})\.sqlite$")
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS impressions (rec_id TEXT, ts REAL, listener TEXT, "
    "version INTEGER, mode TEXT, artists TEXT, versions TEXT, teams TEXT)",
    "CREATE TABLE IF NOT EXISTS feedback (rec_id TEXT, ts REAL, listener TEXT, "
    "artist_id TEXT, action TEXT, play_count REAL, version INTEGER, rank INTEGER, team TEXT)",
)
INSERT = {
    "impressions": "INSERT INTO impressions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "feedback": "INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
}
RESTART_PAUSE_S = 1.0
ERROR_LOG_INTERVAL_S = 10.0


def segments(directory: Path) -> list[Path]:
    """The log's segment files, oldest first."""
    return sorted(p for p in Path(directory).glob(SEGMENT_GLOB) if _SEGMENT.search(p.name))


def _create(path: Path) -> None:
    """A new segment with its tables, in WAL mode (kept in the file), made under a temporary
    name and renamed: a reader never sees a segment without its tables."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        for statement in SCHEMA:
            conn.execute(statement)
        conn.commit()
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()  # the WAL is checkpointed and removed: one file to rename
    tmp.replace(path)


class Segments:
    """The open segment and the rotation (used by the writer thread only)."""

    def __init__(self, directory: Path, segment_rows: int, max_segments: int, *,
                 max_page_count: int | None = None) -> None:  # fmt: skip
        self.directory, self.segment_rows, self.max_segments = directory, segment_rows, max_segments
        self.max_page_count = max_page_count  # tests: SQLite answers "disk is full" past it
        self.conn: sqlite3.Connection | None = None
        self.rows = 0

    def write(self, batch: Sequence[tuple[str, tuple]]) -> None:
        """Commit ``batch`` (``(table, row)`` items) in one transaction; raises on failure."""
        if self.conn is None or self.rows >= self.segment_rows:
            self._rotate()
        conn = self.conn
        assert conn is not None
        by_table: dict[str, list[tuple]] = {}
        for table, row in batch:
            by_table.setdefault(table, []).append(row)
        with conn:  # one transaction: committed, or rolled back on an error
            for table, rows in by_table.items():
                conn.executemany(INSERT[table], rows)
        self.rows += len(batch)

    def _rotate(self) -> None:
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = segments(self.directory)
        last = int(_SEGMENT.search(existing[-1].name).group(1)) if existing else 0
        path = self.directory / f"events-{last + 1:08d}.sqlite"
        _create(path)
        conn = sqlite3.connect(path, check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            if self.max_page_count:
                conn.execute(f"PRAGMA max_page_count={int(self.max_page_count)}")
        except BaseException:
            conn.close()
            raise
        self.conn, self.rows = conn, 0
        self._prune()

    def _prune(self) -> None:
        for old in segments(self.directory)[: -self.max_segments]:
            for path in (old, Path(f"{old}-wal"), Path(f"{old}-shm")):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the open segment (its WAL is checkpointed into the file)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                log.warning("closing an event-log segment failed", exc_info=True)


class EventLog(EventSink):
    """Impressions and feedback to SQLite segments in ``directory`` (see the module).
    :meth:`start` once, :meth:`close` at shutdown (commits what waits, up to a timeout)."""

    def __init__(self, directory: Path, metrics: GatewayMetrics, *, flush_s: float = 1.0,
                 queue_max: int = 50_000, segment_rows: int = 200_000, max_segments: int = 20,
                 max_page_count: int | None = None) -> None:  # fmt: skip
        self.directory, self.metrics, self.flush_s = Path(directory), metrics, flush_s
        self.segments = Segments(self.directory, segment_rows, max_segments,
                                 max_page_count=max_page_count)  # fmt: skip
        self._queue: queue.Queue[tuple[str, tuple]] = queue.Queue(maxsize=queue_max)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error_log = -float("inf")
        self.last_error = ""  # the last write's or the writer's failure, for operators

    # ------------------------------------------------------------------ producers (the loop)

    def impression(self, entry: Impression, mode: str) -> None:
        self._offer("impressions", (entry.rec_id, time.time(), entry.listener, entry.version,
                                    mode, json.dumps(entry.artists), json.dumps(entry.versions),
                                    json.dumps(entry.teams)))  # fmt: skip

    def feedback(self, entry: Impression, events: Sequence[Event],
                 credits: Sequence[Credit]) -> None:  # fmt: skip
        now = time.time()
        for event, credit in zip(events, credits, strict=True):
            self._offer("feedback", (entry.rec_id, now, entry.listener, credit.artist_id,
                                     event.action, event.play_count, credit.version, credit.rank,
                                     credit.team))  # fmt: skip

    def _offer(self, table: str, row: tuple) -> None:
        if self._thread is None or not self._thread.is_alive():
            self.metrics.events_dropped.labels("writer_down").inc()
            return
        try:
            self._queue.put_nowait((table, row))
        except queue.Full:
            self.metrics.events_dropped.labels("queue_full").inc()

    # ------------------------------------------------------------------ the writer thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="event-log", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the writer after it committed what waits (at most ``timeout_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        left = self._queue.qsize()
        if left:
            self.metrics.events_dropped.labels("shutdown").inc(left)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _supervise(self) -> None:
        """Run the writer; if it dies, log why, count it, pause and run it again."""
        while True:
            try:
                self._run()
                return  # stopped
            except Exception as exc:
                self.last_error = f"writer died: {exc!r}"
                log.exception("event log writer died (%r); restarting it in %.0f s", exc,
                              RESTART_PAUSE_S)  # fmt: skip
                self.metrics.events_writer_up.set(0)
                self.metrics.task_restarts.labels("event_log").inc()
                self.segments.close()
                if self._stop.wait(RESTART_PAUSE_S):
                    return

    def _run(self) -> None:
        self.metrics.events_writer_up.set(1)
        try:
            while True:
                batch = self._collect(time.monotonic() + self.flush_s)
                try:
                    if batch:
                        self._write(batch)
                except Exception:
                    self.metrics.events_dropped.labels("writer_died").inc(len(batch))
                    raise
                if self._stop.is_set() and self._queue.empty():
                    return
        finally:
            self.segments.close()

    def _collect(self, until: float) -> list[tuple[str, tuple]]:
        """What reaches the queue before ``until`` (or, once stopping, what waits there)."""
        batch: list[tuple[str, tuple]] = []
        while True:
            left = until - time.monotonic()
            if self._stop.is_set():
                left = 0.0
            try:
                batch.append(self._queue.get(timeout=min(0.1, left)) if left > 0
                             else self._queue.get_nowait())  # fmt: skip
            except queue.Empty:
                if left <= 0:
                    return batch

    def _write(self, batch: list[tuple[str, tuple]]) -> None:
        start = time.perf_counter()
        try:
            self.segments.write(batch)
        except (sqlite3.Error, OSError) as exc:  # a full disk, an unwritable directory
            self.metrics.events_dropped.labels("write_error").inc(len(batch))
            self.metrics.events_writer_up.set(0)
            self.segments.close()  # reopened (a new segment) at the next write
            self._error(exc, len(batch))
            return
        self.metrics.events_flush_seconds.observe(time.perf_counter() - start)
        self.metrics.events_writer_up.set(1)
        for table in INSERT:
            n = sum(1 for t, _ in batch if t == table)
            if n:
                self.metrics.events_written.labels(table).inc(n)

    def _error(self, exc: Exception, rows: int) -> None:
        self.last_error = f"write failed: {exc!r}"
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.error("event log: writing %d rows to %s failed (%r); they are dropped, counted "
                      "in musicrec_gateway_events_dropped_total", rows, self.directory,
                      exc)  # fmt: skip
