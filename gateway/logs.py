"""Structured logs: one JSON object per line (or plain text for people at a terminal), each
carrying the id of the request it belongs to.

The request id travels in a :class:`contextvars.ContextVar`: the interceptor sets it for each
RPC (the caller's ``x-request-id`` or a fresh one), and every log line written while serving
that RPC, the Triton call included, carries it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid

REQUEST_ID_HEADER = "x-request-id"
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


def configure(json_lines: bool, level: int = logging.INFO) -> None:
    """Route the root logger to stderr in the chosen format."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    plain = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if json_lines else plain)
    logging.basicConfig(level=level, handlers=[handler], force=True)
