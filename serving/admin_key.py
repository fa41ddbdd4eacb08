"""The key that unlocks Triton's admin surface: the model-repository API (load, unload, repository
index), model configurations, statistics, tracing, logging and shared memory.

The embedded Triton restricts all of it (``--grpc-restricted-protocol`` and
``--http-restricted-api``) to callers sending the key in the ``musicrec-admin-key`` header;
inference, health and metadata stay open (the gateway needs nothing else; Prometheus reads the
metrics port, which these flags do not cover). There is no default key: a server started without one
makes a random one, and ``musicrec triton`` / the demo keep it in a 0600 file that ``deploy``
reads (or take it from ``MUSICREC_TRITON_ADMIN_KEY``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from core.errors import MusicrecError
from core.paths import PROJECT_ROOT

HEADER = "musicrec-admin-key"
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
ENV_VAR = "MUSICREC_TRITON_ADMIN_KEY"
DEFAULT_FILE = PROJECT_ROOT / ".secrets" / "triton-admin-key"
# Triton 2.51's categories (``tritonserver --help``: health, metadata, inference, shared-memory,
# model-config, model-repository, statistics, trace, logging): every one but the first three.
RESTRICTED = ("model-repository", "model-config", "statistics", "trace", "logging",
              "shared-memory")  # fmt: skip
OPEN = ("health", "metadata", "inference")


class AdminKeyError(MusicrecError):
    """No usable admin key was found."""


def new_key() -> str:
    return secrets.token_urlsafe(32)


def load_or_create(path: Path) -> str:
    """The key kept in ``path``; a new random one (written 0600) if the file is missing."""
    if path.is_file():
        return read_file(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def read_file(path: Path) -> str:
    key = path.read_text().strip()
    if len(key) < 16:
        raise AdminKeyError(f"the admin key in {path} is shorter than 16 characters")
    return key


def resolve(path: Path | None) -> str:
    """``MUSICREC_TRITON_ADMIN_KEY`` if set, else the key file; an error when neither."""
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR].strip()
    path = path or DEFAULT_FILE
    if not path.is_file():
        raise AdminKeyError(f"no Triton admin key: set {ENV_VAR} or give --admin-key-file "
                            f"(the embedded Triton writes {DEFAULT_FILE})")  # fmt: skip
    return read_file(path)


def headers(key: str | None) -> dict[str, str] | None:
    """The gRPC request headers that carry ``key`` (None without one). Triton expects a
    restricted gRPC header under its ``triton-grpc-protocol-`` prefix; HTTP callers send
    ``musicrec-admin-key`` itself."""
    return {GRPC_HEADER_PREFIX + HEADER: key} if key else None


def restriction_flags(key: str) -> list[str]:
    """tritonserver flags that require ``key`` for every category but inference, health and
    metadata."""
    groups = ",".join(RESTRICTED)
    return [f"--grpc-restricted-protocol={groups}:{HEADER}={key}",
            f"--http-restricted-api={groups}:{HEADER}={key}"]  # fmt: skip
