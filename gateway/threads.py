"""The gateway's native thread pools, sized once at start-up.

The gateway's dense algebra is small (an ALS fold-in over ~64 factors, a few hundred candidates):
a BLAS call finishes in microseconds, and OpenBLAS's worker threads then busy-wait for the next
one, a core each, fighting the event loop and Triton for the same cores. One thread (the caller
alone) is the measured default (``benchmarks/cost.py --sweep``)."""

from __future__ import annotations

import logging

from threadpoolctl import threadpool_info, threadpool_limits

log = logging.getLogger(__name__)


def limit_blas_threads(threads: int) -> list[dict]:
    """Cap every BLAS library loaded in this process (NumPy's and SciPy's OpenBLAS) at
    ``threads``; returns what threadpoolctl then reports for them (logged)."""
    threadpool_limits(limits=threads, user_api="blas")
    pools = [{"library": p["internal_api"], "prefix": p["prefix"], "threads": p["num_threads"]}
             for p in threadpool_info() if p["user_api"] == "blas"]  # fmt: skip
    log.info("blas threads", extra={"threads": threads, "pools": pools})
    return pools
