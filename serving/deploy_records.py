"""What deploys leave in the repository: the history (``deployments.json``), the intent record
of a swap in progress (``.deploy-intent.json``), and old versions to retire."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

from core.contract import CATALOGUE_SCORER, SERVED_MODELS, versions
from core.errors import MusicrecError
from core.files import write_atomically

HISTORY_FILE = "deployments.json"
INTENT_FILE = ".deploy-intent.json"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class RecordError(MusicrecError):
    """A deploy record is unreadable; the message names the file."""


def _read_json(path: Path, what: str, expected: type) -> object:
    """The JSON in ``path``; a :class:`RecordError` naming the file when it is not readable
    JSON of the expected shape (a truncated or hand-edited record)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path} ({what}) is unreadable: {exc}") from exc
    if not isinstance(data, expected):
        raise RecordError(f"{path} ({what}) holds a JSON {type(data).__name__}, "
                          f"not a {expected.__name__}")  # fmt: skip
    return data


def read_history(repository: Path) -> list[dict]:
    path = repository / HISTORY_FILE
    return _read_json(path, "the deploy history", list) if path.is_file() else []


def record(repository: Path, entry: dict) -> None:
    """Append one entry to the history (callers hold the repository lock)."""
    write_atomically(repository / HISTORY_FILE,
                     json.dumps([*read_history(repository), entry], indent=2))  # fmt: skip


def amend_last(repository: Path, entry: dict) -> None:
    """Replace the last history entry (callers hold the repository lock)."""
    history = read_history(repository)
    write_atomically(repository / HISTORY_FILE, json.dumps([*history[:-1], entry], indent=2))


def rollback_target(repository: Path, current: int | None) -> int | None:
    """The version that served before ``current`` was deployed: deploy records only, so two
    rollbacks in a row never serve again a version that was rolled back."""
    deploys = [e for e in read_history(repository)
               if e.get("action") == "deploy" and e.get("version") == current]  # fmt: skip
    return deploys[-1].get("previous") if deploys else None


def last_healthy(repository: Path, exclude: set[int]) -> int | None:
    """The version most recently known to serve, still on disk and not in ``exclude``: where to
    go back to when the serving version is broken. Newest record first, each entry's version
    (made to serve by a deploy or rollback that finished: records are written only after the
    gateway answered with it), then a deploy's ``previous`` (which served until that deploy: a
    first deploy over a version no record names still names it there; a rollback's
    ``previous`` is the version rolled back from, never a target)."""
    on_disk = set(versions(repository, CATALOGUE_SCORER))
    for entry in reversed(read_history(repository)):
        if entry.get("action") not in ("deploy", "rollback"):
            continue
        served = [entry.get("version")]
        if entry["action"] == "deploy":
            served.append(entry.get("previous"))
        for v in served:
            if v in on_disk and v not in exclude:
                return v
    return None


def begin(repository: Path, action: str, version: int, previous: int | None) -> None:
    """Record a swap about to start; a later command that finds it finishes the recovery."""
    intent = {"action": action, "version": version, "previous": previous, "at": now()}
    write_atomically(repository / INTENT_FILE, json.dumps(intent))


def pending(repository: Path) -> dict | None:
    """The intent of a swap that did not finish, if one died between its steps."""
    path = repository / INTENT_FILE
    if not path.is_file():
        return None
    try:
        return _read_json(path, "the intent record of an unfinished swap", dict)
    except RecordError as exc:
        raise RecordError(f"{exc}; check which version each model pins with `musicrec status`, "
                          f"then delete the file") from exc  # fmt: skip


def done(repository: Path) -> None:
    (repository / INTENT_FILE).unlink(missing_ok=True)


def served_order(repository: Path) -> list[int]:
    """Versions deploys and rollbacks made to serve, most recently served first."""
    order: list[int] = []
    for entry in reversed(read_history(repository)):
        v = entry.get("version")
        if entry.get("action") in ("deploy", "rollback") and v is not None and v not in order:
            order.append(v)
    return order


def retired_by(repository: Path, version: int) -> dict | None:
    """The deploy record that retired ``version`` (deleted it from disk), if one did."""
    for entry in reversed(read_history(repository)):
        if version in entry.get("retired", ()):
            return entry
    return None


def retire(repository: Path, keep: int, protect: set[int], newest_served: int,
           fresh_after: int | None = None) -> list[int]:  # fmt: skip
    """Delete versions beyond ``keep``, chosen by deploy history: the ``keep`` versions served
    most recently (the rollback chain, ``protect`` included) stay; never-deployed or refused
    candidates go first and stay only while there is room. Never deleted: a version in
    ``protect``, one newer than ``newest_served``, or a never-deployed one newer than
    ``fresh_after`` (exported while the previous version served: another deploy may be
    waiting for it)."""
    on_disk = versions(repository, CATALOGUE_SCORER)
    old = [v for v in on_disk if v <= newest_served and v not in protect]
    room = max(0, keep - len(protect & set(on_disk)))
    deployed = [v for v in served_order(repository) if v in old]  # most recently served first
    candidates = sorted((v for v in old if v not in deployed), reverse=True)  # newest first
    fresh = {v for v in candidates if fresh_after is not None and v > fresh_after}
    kept = fresh | set((deployed + [v for v in candidates if v not in fresh])[:room])
    doomed = [v for v in old if v not in kept]
    for v in doomed:
        for name in SERVED_MODELS:
            shutil.rmtree(repository / name / str(v), ignore_errors=True)
    return doomed
