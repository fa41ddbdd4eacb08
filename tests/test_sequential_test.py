"""The always-valid tests of core/sequential_test.py, proven by simulation: peeking after every
observation, the null is rejected in at most ``alpha`` of the streams (within Monte-Carlo
error), and a real effect is found within the number of observations reported here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.sequential_test import (
    ProportionsRules,
    beta_log_lr,
    difference_interval,
    enough_traffic,
    interleaving_test,
    normal_log_lr,
    proportions_test,
)

ALPHA = 0.05
STREAMS, LENGTH = 2000, 5000
# three standard errors of a rate alpha over STREAMS streams
SLACK = 3 * math.sqrt(ALPHA * (1 - ALPHA) / STREAMS)


def _first_crossing(crossed: np.ndarray) -> np.ndarray:
    """Per stream, the observation (1-based) of the first True; LENGTH + 1 when none."""
    return np.where(crossed.any(1), crossed.argmax(1) + 1, crossed.shape[1] + 1)


def _interleaved(p: float, streams: int, seed: int) -> np.ndarray:
    """First observations at which the beta mSPRT decides, decisive impressions won w.p. p."""
    won = np.random.default_rng(seed).random((streams, LENGTH)) < p
    wins = np.cumsum(won, 1)
    log_lr = beta_log_lr(wins, np.arange(1, LENGTH + 1) - wins)
    return _first_crossing(log_lr >= math.log(1 / ALPHA))


def test_interleaving_peeking_after_every_impression_keeps_false_decisions_below_alpha():
    first = _interleaved(0.5, STREAMS, seed=0)
    rate = float(np.mean(first <= LENGTH))
    print(f"interleaving, fair candidate: {rate:.4f} false decisions in {STREAMS} x {LENGTH}")
    assert rate <= ALPHA + SLACK


@pytest.mark.parametrize(("p", "decision"), [(0.55, "better"), (0.45, "worse")])
def test_interleaving_finds_a_real_difference(p, decision):
    first = _interleaved(p, 500, seed=1)
    median, p90 = np.median(first), np.percentile(first, 90)
    print(f"win share {p}: decided after a median {median:.0f}, 90% by {p90:.0f} decisive")
    assert np.mean(first <= LENGTH) >= 0.99 and median < 1000 and p90 < 2500
    wins = round(p * 1500)  # the scalar form agrees and names the side
    result = interleaving_test(wins, 1500 - wins, ties=1200)
    assert result.decision == decision and result.confidence > 1 - ALPHA
    assert result.ties == 1200 and result.win_share == pytest.approx(p)


def test_interleaving_result_is_sticky_and_its_p_value_only_falls():
    r = interleaving_test(0, 0)
    assert r.decision == "not yet" and r.p_value == 1.0 and r.win_share is None
    r = interleaving_test(450, 350, previous=r)
    assert r.decision == "better"
    later = interleaving_test(460, 440, previous=r)  # the share drifted back: still decided
    assert later.decision == "better" and later.p_value == r.p_value
    assert interleaving_test(460, 440).decision == "not yet"
    with pytest.raises(ValueError):
        interleaving_test(-1, 0)


def _two_sided(share: float, p_canary: float, p_serving: float, streams: int, seed: int,
               rules: ProportionsRules) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per stream: the first impression at which the mSPRT decides (minimum-traffic rule
    applied), and the first at which the canary is shown "not worse" (interval >= -max_drop)."""
    rng = np.random.default_rng(seed)
    firsts, shown = [], []
    for _ in range(streams // 250):
        canary = rng.random((250, LENGTH)) < share
        u = rng.random((250, LENGTH))
        hit = np.where(canary, u < p_canary, u < p_serving)
        n1 = np.cumsum(canary, 1)
        n0 = np.arange(1, LENGTH + 1) - n1
        h1, h0 = np.cumsum(hit & canary, 1), np.cumsum(hit & ~canary, 1)
        ok = enough_traffic(h1, n1, h0, n0, rules)
        log_lr = normal_log_lr(h1, n1, h0, n0, rules.tau)
        firsts.append(_first_crossing(ok & (log_lr >= math.log(1 / rules.alpha))))
        low, _ = difference_interval(h1, n1, h0, n0, rules.alpha, rules.tau)
        shown.append(_first_crossing(ok & (low >= -rules.max_drop)))
    return np.concatenate(firsts), np.concatenate(shown)


@pytest.mark.parametrize(("share", "rate"), [(0.5, 0.2), (0.1, 0.05)])
def test_hit_rates_peeking_after_every_impression_keep_false_decisions_below_alpha(share, rate):
    """Equal hit rates, a canary of 50% at 0.2 and of 10% at a thin 0.05 (few hits)."""
    first, _ = _two_sided(share, rate, rate, STREAMS, seed=2, rules=ProportionsRules(ALPHA))
    false = float(np.mean(first <= LENGTH))
    print(f"hit rates {rate} each, canary {share:.0%}: {false:.4f} false decisions")
    assert false <= ALPHA + SLACK


def test_a_canary_worse_by_more_than_max_drop_is_never_shown_not_worse():
    """ "not worse" (what "healthy" needs) is wrong in at most alpha of the streams."""
    rules = ProportionsRules(ALPHA)
    _, shown = _two_sided(0.5, 0.2 - rules.max_drop, 0.2, STREAMS, seed=3, rules=rules)
    wrong = float(np.mean(shown <= LENGTH))
    print(f"canary {rules.max_drop} below: shown not worse in {wrong:.4f} of the streams")
    assert wrong <= ALPHA + SLACK
    _, equal = _two_sided(0.5, 0.2, 0.2, 500, seed=4, rules=rules)
    print(f"equal canary: shown not worse after a median {np.median(equal):.0f} impressions")
    assert np.median(equal) < LENGTH


@pytest.mark.parametrize("share", [0.5, 0.1])
def test_a_worse_hit_rate_is_detected(share):
    first, _ = _two_sided(share, 0.2, 0.3, 500, seed=5, rules=ProportionsRules(ALPHA))
    median, p90 = np.median(first), np.percentile(first, 90)
    print(f"hit rate 0.20 against 0.30, canary {share:.0%}: decided after a median "
          f"{median:.0f} impressions, 90% by {p90:.0f}")  # fmt: skip
    assert np.mean(first <= LENGTH) >= 0.95 and median < (800 if share == 0.5 else 3000)


def test_proportions_result_on_thin_and_on_enough_traffic():
    rules = ProportionsRules()
    thin = proportions_test((0, 50), (20, 50), rules)
    assert thin.decision == "not yet" and not thin.enough and not thin.not_worse
    assert "thin feedback" in thin.why
    quiet = proportions_test((0, 500), (0, 5000), rules)  # no feedback at all: never "not worse"
    assert not quiet.enough and not quiet.not_worse
    worse = proportions_test((20, 200), (600, 2000), rules, previous=thin)
    assert worse.decision == "worse" and worse.confidence > 0.95 and worse.difference < 0
    lo, hi = worse.interval
    assert lo < -0.2 < hi < 0
    assert proportions_test((290, 1000), (300, 1000), rules, previous=worse).decision == "worse"
    fine = proportions_test((600, 2000), (6000, 20000), rules)
    assert fine.decision == "not yet" and fine.not_worse and fine.enough
    with pytest.raises(ValueError):
        proportions_test((5, 4), (0, 10))
    with pytest.raises(ValueError):
        ProportionsRules(alpha=0)
