"""Structured logs: one JSON object per line (or plain text for people at a terminal), each
carrying the id of the request it belongs to.

The request id travels in a :class:`contextvars.ContextVar`: the interceptor sets it for each
RPC (the caller's ``x-request-id`` or a fresh one), and every log line written while serving
that RPC, the Triton call included, carries it.

Volume: the access line of every RPC (``"msg": "rpc"``) is sampled: failed RPCs are always
logged, successful ones up to :data:`ACCESS_LINES_PER_S` a second (a burst of
:data:`ACCESS_BURST`); the next line let through says how many were skipped. With
``MUSICREC_GATEWAY_LOG_LEVEL=debug`` every line is written. ``MUSICREC_GATEWAY_LOG_FILE`` makes
the gateway write its log itself, rotated (:data:`ROTATE_BYTES` a file, or
``MUSICREC_GATEWAY_LOG_ROTATE_BYTES``; :data:`ROTATE_KEEP` old files). What native code writes
on file descriptor 2 (gRPC core's lines, e.g. a failed TLS handshake) goes through the same
JSON logger (``"logger": "grpc.core"``), one record a line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
import uuid
from pathlib import Path

REQUEST_ID_HEADER = "x-request-id"
LEVEL_ENV, FILE_ENV = "MUSICREC_GATEWAY_LOG_LEVEL", "MUSICREC_GATEWAY_LOG_FILE"
ROTATE_ENV = "MUSICREC_GATEWAY_LOG_ROTATE_BYTES"
ACCESS_LINES_PER_S, ACCESS_BURST = 5.0, 50
ROTATE_BYTES, ROTATE_KEEP = 10 * 1024 * 1024, 5
_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def current_request_id() -> str:
    """The id of the request being served ('' outside one)."""
    return _REQUEST_ID.get() or ""


def bind_request_id(offered: str | None) -> str:
    """Serve the current task under ``offered`` (when well-formed) or a fresh id; returns it."""
    rid = offered if offered and _VALID_ID.fullmatch(offered) else uuid.uuid4().hex
    _REQUEST_ID.set(rid)
    return rid


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record written while a request is served."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = _REQUEST_ID.get()
        if rid and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra fields}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class AccessSampler:
    """A token bucket for the access lines of successful RPCs: ``rate`` a second, bursts of
    ``burst``. Asked before a line is built, so a line sampled away costs no log record."""

    def __init__(self, rate: float = ACCESS_LINES_PER_S, burst: int = ACCESS_BURST) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at, self.skipped = float(burst), time.monotonic(), 0
        self._lock = threading.Lock()

    def admit(self) -> int | None:
        """None: skip this line; else let it through, with the count of lines skipped since
        the last one let through."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens < 1:
                self.skipped += 1
                return None
            self.tokens -= 1
            skipped, self.skipped = self.skipped, 0
        return skipped


_ACCESS: AccessSampler | None = None  # set by configure(); None: every access line (debug)


def admit_access(failed: bool) -> int | None:
    """Whether to write an RPC's access line: always for a failed RPC, sampled for the others
    (see :class:`AccessSampler`); the count of skipped lines to report, or None to skip it."""
    if failed or _ACCESS is None:
        return 0
    return _ACCESS.admit()


_NATIVE_LEVELS = {"E": logging.ERROR, "W": logging.WARNING, "I": logging.INFO,
                  "F": logging.CRITICAL, "D": logging.DEBUG}  # fmt: skip
_NATIVE_PREFIX = re.compile(r"([EWIFD])\d{4} ")  # absl / gRPC core: E1128 23:59:01.123 ...


def capture_native_stderr(logger: str = "grpc.core") -> None:
    """Point file descriptor 2 at a pipe whose lines are logged as records of ``logger`` (level
    from the absl prefix), so gRPC core's lines are JSON like the rest; Python's own
    ``sys.stderr`` keeps the original destination (a crash's traceback still gets out)."""
    original = os.dup(2)
    sys.stderr = open(original, "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    native = logging.getLogger(logger)

    def pump() -> None:
        with open(read_fd, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if text := line.rstrip():
                    m = _NATIVE_PREFIX.match(text)
                    native.log(_NATIVE_LEVELS[m.group(1)] if m else logging.WARNING, text)

    threading.Thread(target=pump, name="native-stderr", daemon=True).start()


def configure(json_lines: bool, level: int | None = None, log_file: Path | str | None = None,
              *, capture_native: bool | None = None) -> None:  # fmt: skip
    """Route the root logger to stderr, or to ``log_file`` (rotated), in the chosen format.
    ``level`` defaults to ``MUSICREC_GATEWAY_LOG_LEVEL`` (info); ``log_file`` to
    ``MUSICREC_GATEWAY_LOG_FILE``. With JSON lines, native stderr is captured too (see
    :func:`capture_native_stderr`) unless ``capture_native`` is False."""
    if level is None:
        level = logging.getLevelNamesMapping().get(
            os.environ.get(LEVEL_ENV, "info").upper(), logging.INFO)  # fmt: skip
    log_file = log_file or os.environ.get(FILE_ENV) or None
    if json_lines and (capture_native if capture_native is not None else True):
        capture_native_stderr()
    if log_file:
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=int(os.environ.get(ROTATE_ENV, ROTATE_BYTES)),
            backupCount=ROTATE_KEEP, encoding="utf-8")  # fmt: skip
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    global _ACCESS
    _ACCESS = AccessSampler() if level > logging.DEBUG else None
    plain = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if json_lines else plain)
    logging.basicConfig(level=level, handlers=[handler], force=True)
