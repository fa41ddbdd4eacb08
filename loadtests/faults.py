"""Faults and probes for reliability tests and benchmarks: hand-made and corrupted versions,
the addresses a process listens on."""

from __future__ import annotations

import ipaddress
import json
import shutil
from pathlib import Path

from core.contract import MANIFEST, SERVED_MODELS


def clone_version(repo: Path, source: int, target: int) -> None:
    """Copy ``source`` to ``target`` in every model, manifests renumbered (a version made by
    hand, as an operator copying a served one would)."""
    for name in SERVED_MODELS:
        skip = shutil.ignore_patterns("__pycache__")  # every sealed file, so checksums hold
        shutil.copytree(repo / name / str(source), repo / name / str(target), ignore=skip)
        path = repo / name / str(target) / MANIFEST
        manifest = json.loads(path.read_text())
        path.write_text(json.dumps({**manifest, "version": target}))


def truncate(path: Path, size: int = 100) -> None:
    """Cut a file to its first ``size`` bytes (a copy that died half-way)."""
    path.write_bytes(path.read_bytes()[:size])


def replace_plays(path: Path) -> None:
    """Write a valid plays file of the same shape with other contents (the users' rows rolled
    by one): loads without an error, yet is not the file the export sealed."""
    import numpy as np
    import scipy.sparse as sp

    plays = sp.load_npz(path).tocsr()
    rolled = sp.csr_matrix(np.roll(plays.toarray(), 1, axis=0))
    assert rolled.shape == plays.shape and (rolled != plays).nnz
    sp.save_npz(path, rolled)


def listening(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(_address(address))
    return found


def _address(hex_address: str) -> str:
    """/proc's hex address (32-bit words in host order) as text; IPv4-mapped IPv6 as IPv4."""
    raw = bytes.fromhex(hex_address)
    ip = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
    return str(ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped else ip)
