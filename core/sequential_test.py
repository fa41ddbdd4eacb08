"""Always-valid sequential tests: safe to look at after every poll, and to stop at any time.

Each test is a mixture sequential probability ratio test (mSPRT; Robbins 1970, Johari, Pekelis
and Walsh 2017, "Always valid inference: bringing sequential analysis to A/B testing"). Its
likelihood ratio ``L_n`` against the null, mixed over a prior on the effect, is a
non-negative martingale under the null with ``E[L_0] = 1``, so by Ville's inequality
``P(sup_n L_n >= 1/alpha) <= alpha``: a decision taken the first time ``L_n`` reaches
``1/alpha`` is wrong with probability at most ``alpha`` however often one peeks, and
``p_n = min(1, 1/max_{m<=n} L_m)`` is an always-valid p-value. Both tests are two-sided (a
decision in either direction counts against ``alpha``); the sign of the estimate names it.

:func:`interleaving_test` — per-impression outcomes of an interleaved comparison (candidate
win, serving win, tie); the null is ``P(candidate wins | decisive) = 1/2``. The mixture is
over a ``Beta(a, a)`` prior on that probability, so ``L_n`` is exact (a Bayes factor of the
beta-binomial against the fair coin); ties carry no information and are only counted.

:func:`proportions_test` — two hit rates (hits / impressions of a canary and of the serving
version); the null is equal rates. The mixture is the normal-approximation mSPRT of Johari et
al. (section 4) on the difference, mixed over ``N(0, tau^2)``, with each rate's variance
plugged in. The normal approximation is why a minimum-traffic rule comes first: below
``min_impressions`` per side (or ``min_hits`` in all) the answer is "not yet". Its inversion,
:func:`difference_interval`, is a confidence sequence for the difference (valid at any stopping
time), from which :attr:`ProportionsResult.not_worse` says whether the canary is shown to be no
more than ``max_drop`` below the serving version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import betaln

DECISIONS = ("better", "worse", "not yet")


@dataclass(frozen=True)
class InterleavingResult:
    """Where an interleaved comparison stands; pass it back as ``previous`` on the next poll."""

    decision: str  # one of DECISIONS: the candidate's
    p_value: float  # always valid: min over every poll so far of 1 / L
    confidence: float  # 1 - p_value
    wins: int  # impressions the candidate's team won
    losses: int  # impressions the serving team won
    ties: int
    win_share: float | None  # wins / (wins + losses)
    log_lr: float  # log L now


@dataclass(frozen=True)
class ProportionsRules:
    """The two-proportion test's settings (defaults: a canary's hit-rate gate)."""

    alpha: float = 0.05
    tau: float = 0.05  # prior sd of the difference: effects of a few points
    min_impressions: int = 100  # per side, before any decision (the normal approximation)
    min_hits: int = 20  # in all, before any decision: feedback must be flowing
    max_drop: float = 0.05  # "not worse": no more than this below the serving rate

    def __post_init__(self) -> None:
        if not (0 < self.alpha < 1 and self.tau > 0 and self.max_drop > 0):
            raise ValueError("alpha must lie in (0, 1), tau and max_drop above 0")
        if self.min_impressions < 1 or self.min_hits < 0:
            raise ValueError("min_impressions must be >= 1, min_hits >= 0")


@dataclass(frozen=True)
class ProportionsResult:
    """Where a two-proportion comparison stands; pass it back as ``previous``."""

    decision: str  # one of DECISIONS: the canary's ("not yet" also on thin traffic)
    p_value: float  # always valid (1.0 while traffic is thin)
    confidence: float
    canary_rate: float | None
    serving_rate: float | None
    difference: float | None  # canary - serving
    interval: tuple[float, float] | None  # confidence sequence of the difference at 1 - alpha
    enough: bool  # the minimum-traffic rule is met
    not_worse: bool  # enough, not "worse", and the interval's low end >= -max_drop
    why: str  # a sentence for operators


def _decide(log_lr: float, sign: float, alpha: float) -> str:
    if log_lr < math.log(1 / alpha) or sign == 0:
        return "not yet"
    return "better" if sign > 0 else "worse"


def _sticky(decision: str, p_value: float, previous) -> tuple[str, float]:
    """A decision once taken stands; the p-value only falls (its running minimum)."""
    if previous is None:
        return decision, p_value
    kept = previous.decision if previous.decision != "not yet" else decision
    return kept, min(p_value, previous.p_value)


# ---------------------------------------------------------------- interleaving


def beta_log_lr(wins, losses, a: float = 20.0):
    """log L of ``Beta(a, a)``-mixed Bernoulli against ``p = 1/2`` (arrays work too)."""
    w, n = np.asarray(wins, float), np.asarray(wins, float) + np.asarray(losses, float)
    return betaln(a + w, a + n - w) - betaln(a, a) + n * math.log(2.0)


def interleaving_test(wins: int, losses: int, ties: int = 0, *, alpha: float = 0.05,
                      a: float = 20.0, previous: InterleavingResult | None = None,
                      ) -> InterleavingResult:  # fmt: skip
    """The candidate's decision from cumulative outcome counts (see the module). ``a``: the
    prior's concentration (sd of the win share about ``1/sqrt(8a + 4)``, 0.078 at 20)."""
    if not 0 < alpha < 1 or a <= 0 or min(wins, losses, ties) < 0:
        raise ValueError("alpha must lie in (0, 1), a above 0, counts >= 0")
    log_lr = float(beta_log_lr(wins, losses, a))
    decision = _decide(log_lr, float(np.sign(wins - losses)), alpha)
    decision, p = _sticky(decision, min(1.0, math.exp(-log_lr)), previous)
    decisive = wins + losses
    share = wins / decisive if decisive else None
    return InterleavingResult(decision, p, 1 - p, wins, losses, ties, share, log_lr)


# ---------------------------------------------------------------- two proportions


def _rate(hits, n):
    """A rate kept off 0 and 1 for its variance: (hits + 1/2) / (n + 1)."""
    return (np.asarray(hits, float) + 0.5) / (np.asarray(n, float) + 1.0)


def _variance(h1, n1, h0, n0):
    p1, p0 = _rate(h1, n1), _rate(h0, n0)
    return p1 * (1 - p1) / np.maximum(n1, 1) + p0 * (1 - p0) / np.maximum(n0, 1)


def _difference(h1, n1, h0, n0):
    return np.asarray(h1, float) / np.maximum(n1, 1) - np.asarray(h0, float) / np.maximum(n0, 1)


def _pooled_variance(h1, n1, h0, n0):
    """The difference's variance under equal rates: the pooled rate's, on both sides."""
    n1, n0 = np.maximum(n1, 1), np.maximum(n0, 1)
    p = _rate(np.asarray(h1) + np.asarray(h0), n1 + n0)
    return p * (1 - p) * (1 / n1 + 1 / n0)


def normal_log_lr(h1, n1, h0, n0, tau: float = 0.05):
    """log L of the normal mSPRT for equal rates, the difference mixed over ``N(0, tau^2)``
    (Johari et al. 2017, eq. 11), with the pooled variance of the null: a small side's own
    rate would understate its variance when it happens to run low (arrays work too)."""
    v, t2 = _pooled_variance(h1, n1, h0, n0), tau * tau
    d = _difference(h1, n1, h0, n0)
    return 0.5 * np.log(v / (v + t2)) + t2 * d * d / (2 * v * (v + t2))


def difference_interval(h1, n1, h0, n0, alpha: float, tau: float = 0.05):
    """The confidence sequence for ``rate1 - rate0``: every ``theta0`` the mSPRT would not
    reject at ``alpha`` (valid at any stopping time); (low, high), arrays work too."""
    v, t2 = _variance(h1, n1, h0, n0), tau * tau
    half = np.sqrt(v * (v + t2) / t2 * (2 * math.log(1 / alpha) + np.log((v + t2) / v)))
    d = _difference(h1, n1, h0, n0)
    return d - half, d + half


def enough_traffic(h1, n1, h0, n0, rules: ProportionsRules):
    """The minimum-traffic rule: ``min_impressions`` on each side, ``min_hits`` in all."""
    n1, n0 = np.asarray(n1), np.asarray(n0)
    hits = np.asarray(h1) + np.asarray(h0)
    return (np.minimum(n1, n0) >= rules.min_impressions) & (hits >= rules.min_hits)


def proportions_test(canary: tuple[int, int], serving: tuple[int, int],
                     rules: ProportionsRules | None = None, *,
                     previous: ProportionsResult | None = None) -> ProportionsResult:  # fmt: skip
    """The canary's decision from cumulative ``(hits, impressions)`` of each side."""
    rules = rules or ProportionsRules()
    (h1, n1), (h0, n0) = canary, serving
    if min(h1, n1, h0, n0) < 0 or h1 > n1 or h0 > n0:
        raise ValueError("hits and impressions must be >= 0, hits <= impressions")
    r1, r0 = (h1 / n1 if n1 else None), (h0 / n0 if n0 else None)
    if not bool(enough_traffic(h1, n1, h0, n0, rules)):
        why = (f"thin feedback: {n1:.0f} canary and {n0:.0f} serving impressions, {h1 + h0:.0f} "
               f"hits (a decision needs {rules.min_impressions} a side and {rules.min_hits} "
               "hits)")  # fmt: skip
        p = previous.p_value if previous else 1.0
        kept = previous.decision if previous else "not yet"
        return ProportionsResult(kept, p, 1 - p, r1, r0, None, None, False, False, why)
    log_lr = float(normal_log_lr(h1, n1, h0, n0, rules.tau))
    d = float(_difference(h1, n1, h0, n0))
    decision, p = _sticky(_decide(log_lr, float(np.sign(d)), rules.alpha),
                          min(1.0, math.exp(-log_lr)), previous)  # fmt: skip
    lo, hi = (float(x) for x in difference_interval(h1, n1, h0, n0, rules.alpha, rules.tau))
    not_worse = decision != "worse" and lo >= -rules.max_drop
    why = (f"hit rate {r1:.3f} against {r0:.3f} ({d:+.3f}, {1 - rules.alpha:.0%} interval "
           f"{lo:+.3f} .. {hi:+.3f}; p {p:.3g})")  # fmt: skip
    return ProportionsResult(decision, p, 1 - p, r1, r0, d, (lo, hi), True, not_worse, why)
