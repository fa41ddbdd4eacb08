"""Safe file operations on the shared model repository: atomic writes through unique temporary
files, one-at-a-time changes under an ``fcntl`` lock, and per-file checksums."""

from __future__ import annotations

import compileall
import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".lock"
_held = threading.local()  # repositories this thread holds the lock of (re-entrant)
_umask_lock = threading.Lock()


def current_umask() -> int:
    """This process's umask, read without changing it (Linux ``/proc``); elsewhere set and
    restored at once under a lock, so no other thread's file meets a zero umask."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    with _umask_lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def write_atomically(path: Path, text: str, *, private: bool = False) -> None:
    """Replace ``path`` with ``text`` in one step, through a temporary file unique to this call
    (concurrent writers never share one), flushed to disk before the rename. The file gets the
    mode a plain ``open(path, "w")`` gives (0644 under umask 022: Triton, another uid, reads
    the pins a deploy writes); ``private`` keeps it 0600 (secrets)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if private else 0o666 & ~current_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def repository_lock(repository: Path, timeout_s: float = 900.0) -> Iterator[None]:
    """Hold the repository's exclusive lock: export, deploy and rollback run one at a time,
    across processes. Re-entrant within a thread (a deploy exports under its own lock)."""
    key = str(Path(repository).resolve())
    held: set[str] = getattr(_held, "keys", set())
    if key in held:
        yield
        return
    Path(repository).mkdir(parents=True, exist_ok=True)
    with open(Path(repository) / LOCK_FILE, "a+") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{repository} stayed locked by another deploy or "
                                       f"export for {timeout_s:.0f} s") from None  # fmt: skip
                time.sleep(0.05)
        _held.keys = held | {key}
        try:
            yield
        finally:
            _held.keys = held
            fcntl.flock(f, fcntl.LOCK_UN)


def file_digests(directory: Path, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``directory`` but those in ``skip`` and
    Python's bytecode caches (Triton's Python backend writes ``__pycache__`` beside model.py)."""
    digests = {}
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel not in skip and "__pycache__" not in path.relative_to(directory).parts:
            digests[rel] = sha256_of(path)
    return digests


def sha256_of(path: Path) -> str:
    """The hex sha256 of one file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def compile_python(directory: Path) -> None:
    """Write the bytecode of every ``.py`` file under ``directory`` that lacks an up-to-date
    one. Triton's Python backend otherwise writes ``__pycache__`` into a version while loading
    it, and Triton then takes that version for changed: the next load of its model (each step
    of a deploy) reloads it in full. Best effort: a read-only repository is left as it is."""
    with contextlib.suppress(OSError):
        compileall.compile_dir(directory, quiet=2, workers=1)
