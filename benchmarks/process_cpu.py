"""CPU time of whole process groups, read from ``/proc``: the gateway (and its workers), Triton
(the server and every Python-backend stub), and the load generator itself.

A point's CPU cost per request is the difference of two snapshots taken while the load runs,
divided by the requests answered between them; on shared cores it is the steady figure where
latency and requests/s move with whatever else runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from serving.processes import group_members

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds (user + system) and context switches of a set of processes at one moment."""

    seconds: float
    voluntary: int
    involuntary: int
    processes: int

    def __sub__(self, other: CpuSample) -> CpuSample:
        return CpuSample(self.seconds - other.seconds, self.voluntary - other.voluntary,
                         self.involuntary - other.involuntary, self.processes)  # fmt: skip


def _process(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, voluntary, involuntary context switches) of one process, all threads."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0, 0  # exited between the listing and the read
    fields = stat.rsplit(")", 1)[1].split()
    seconds = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    switches = dict(line.split(":\t") for line in status.splitlines() if "ctxt_switches" in line)
    return (seconds, int(switches.get("voluntary_ctxt_switches", 0)),
            int(switches.get("nonvoluntary_ctxt_switches", 0)))  # fmt: skip


def sample_pids(pids: list[int]) -> CpuSample:
    """One snapshot of the processes ``pids``."""
    parts = [_process(p) for p in pids]
    return CpuSample(sum(p[0] for p in parts), sum(p[1] for p in parts),
                     sum(p[2] for p in parts), len(pids))  # fmt: skip


def sample_group(pgid: int) -> CpuSample:
    """One snapshot of every live process of the process group ``pgid``."""
    return sample_pids(group_members(pgid))


def sample_self() -> CpuSample:
    """This process (the load generator), every thread."""
    return sample_pids([os.getpid()])
