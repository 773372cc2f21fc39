"""pass@k against exact combinatorics, maj@k voting and ties, and the per-prompt averaging."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pandas as pd
import pytest

from rsft_gen import metrics
from rsft_gen.metrics import maj_at_k, majority_answer, pass_at_k, sampled_metrics


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration_and_comb_formula(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            got = pass_at_k(n, c, k)
            assert got == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)
            assert got == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12), (n, c, k)


def test_pass_at_k_when_fewer_wrong_samples_than_k_is_one():
    # n - c < k: any k samples must include a correct one
    assert pass_at_k(10, 8, 3) == 1.0
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(4, 0, 4) == 0.0  # ... unless there is no correct sample at all


def test_pass_at_k_is_stable_for_large_n():
    # math.comb(2000, 1000) has ~600 digits; the product form stays in floats
    got = pass_at_k(2000, 3, 1000)
    exact = 1 - math.comb(1997, 1000) / math.comb(2000, 1000)
    assert got == pytest.approx(exact, rel=1e-12)
    assert pass_at_k(2000, 0, 1) == 0.0 and pass_at_k(2000, 1, 1) == pytest.approx(1 / 2000)


@pytest.mark.parametrize("n,c,k", [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(n, c, k)


def test_majority_vote_and_missing_answers():
    rng = np.random.default_rng(0)
    assert majority_answer(["7", "7", "8", None, None, None], rng) == "7"  # None is not a vote
    assert majority_answer([None, None], rng) is None
    assert maj_at_k(["8", "7", "7"], [False, True, True], 3, rng) == 1.0
    assert maj_at_k(["8", "8", "7"], [False, False, True], 3, rng) == 0.0
    # only the first k samples vote
    assert maj_at_k(["8", "7", "7", "7"], [False, True, True, True], 1, rng) == 0.0


def test_maj_at_k_ties_are_broken_by_the_seed_and_both_sides_win_sometimes():
    answers, correct = ["1", "2", "1", "2"], [True, False, True, False]
    draws = [maj_at_k(answers, correct, 4, np.random.default_rng(s)) for s in range(64)]
    assert set(draws) == {0.0, 1.0}  # a real draw, not "first seen" or "smallest"
    again = [maj_at_k(answers, correct, 4, np.random.default_rng(s)) for s in range(64)]
    assert draws == again  # same seed, same winner
    # the draw does not depend on the order the tied answers appeared in
    flipped = [maj_at_k(answers[::-1], correct[::-1], 4, np.random.default_rng(s)) for s in range(64)]
    assert draws == flipped


def _samples(rows):
    return pd.DataFrame(rows, columns=["prompt_id", "sample_index", "completion", "correct"])


def test_sampled_metrics_averages_over_prompts():
    df = _samples(
        [
            # prompt 0: 4 samples, 1 correct ("5"), majority "6" is wrong
            (0, 0, "6", False),
            (0, 1, "5", True),
            (0, 2, "6", False),
            (0, 3, "4", False),
            # prompt 1: 4 samples, 3 correct, majority "9" right
            (1, 0, " 9", True),
            (1, 1, "9 ", True),
            (1, 2, "1", False),
            (1, 3, "9", True),
        ]
    )
    m = sampled_metrics(df.sample(frac=1, random_state=0), ks=[1, 2, 4], seed=0)  # row order must not matter
    assert m["eval/pass@1"] == pytest.approx((pass_at_k(4, 1, 1) + pass_at_k(4, 3, 1)) / 2)
    assert m["eval/pass@2"] == pytest.approx((pass_at_k(4, 1, 2) + 1.0) / 2)
    assert m["eval/pass@4"] == 1.0
    assert m["eval/maj@4"] == 0.5
    assert m["eval/maj@1"] == 0.5  # first sample of each prompt: wrong, right


def test_sampled_metrics_uses_the_extraction_mode():
    df = _samples([(0, 0, "so 12", True), (0, 1, "it is 12.0", True), (0, 2, "13", False)])
    # whole-text answers are all different: a three-way tie; extracted numbers agree on 12
    assert sampled_metrics(df, ks=[3], seed=0, extract="last_number")["eval/maj@3"] == 1.0


def test_sampled_metrics_rejects_k_above_samples():
    df = _samples([(0, 0, "1", True), (0, 1, "1", True)])
    with pytest.raises(ValueError, match="eval.k"):
        sampled_metrics(df, ks=[3], seed=0)


def test_doctests():
    assert doctest.testmod(metrics).failed == 0
