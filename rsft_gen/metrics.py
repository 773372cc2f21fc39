"""pass@k and maj@k from n sampled completions per prompt.

    from rsft_gen.metrics import pass_at_k, sampled_metrics
    pass_at_k(n=10, c=3, k=4)                       # 0.8333...
    sampled_metrics(samples, ks=[1, 4], seed=0)     # {"eval/pass@1": ..., "eval/maj@4": ...}

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language
Models Trained on Code"): the chance that at least one of k samples drawn
without replacement from the n generated is correct, 1 - C(n-c, k) / C(n, k),
written as a product so it never forms the huge binomials.

maj@k takes the first k samples of a prompt (samples are i.i.d., so any k of
them are a random k), votes on their extracted answers, and scores the winning
answer; a tie is broken by a seeded draw among the tied answers. It needs an
answer (eval.answer, rsft_gen/answers.py): with none it is not reported, since
votes on whole chain-of-thought texts, almost all distinct, are pass@1 in disguise.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from reward.exact_match import extract_answer


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one prompt with n samples of which c are correct.

    >>> pass_at_k(5, 0, 1), pass_at_k(5, 5, 5), pass_at_k(4, 2, 3)
    (0.0, 1.0, 1.0)
    >>> round(pass_at_k(10, 3, 4), 6)  # 1 - C(7,4)/C(10,4) = 1 - 35/210
    0.833333
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_answer(answers: list[str | None], rng: np.random.Generator) -> str | None:
    """The most common non-missing answer; ties broken by a seeded draw. None if all are missing."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    tied = sorted(a for a, c in counts.items() if c == top)  # sorted: the draw depends on the seed only
    return tied[0] if len(tied) == 1 else tied[int(rng.integers(len(tied)))]


def maj_at_k(answers: list[str | None], correct: list[bool], k: int, rng: np.random.Generator) -> float:
    """1.0 when the majority answer of the first k samples is a correct one, else 0.0.

    A sample's `correct` says whether its answer is right; the winner is scored
    by the first of the k samples that gave it.

    >>> maj_at_k(["3", "4", "3"], [True, False, True], 3, np.random.default_rng(0))
    1.0
    >>> maj_at_k([None, None], [False, False], 2, np.random.default_rng(0))
    0.0
    """
    if not 1 <= k <= len(answers):
        raise ValueError(f"maj_at_k needs 1 <= k <= number of samples ({len(answers)}); got k={k}")
    answers, correct = list(answers[:k]), list(correct[:k])
    winner = majority_answer(answers, rng)
    if winner is None:
        return 0.0
    return float(bool(correct[answers.index(winner)]))


def sampled_metrics(
    samples: pd.DataFrame, ks: list[int], seed: int, extract: str | None = "strip", pattern: str | None = None
) -> dict:
    """eval/pass@k and eval/maj@k, averaged over prompts.

    `samples` has one row per sample: prompt_id, sample_index (optional; order
    of sampling), completion and correct (bool). `extract`/`pattern` choose how
    answers are pulled from completions for the vote (see reward.exact_match);
    extract None: no answer, so no maj@k.
    """
    rng = np.random.default_rng(seed)
    order = ["prompt_id", "sample_index"] if "sample_index" in samples.columns else ["prompt_id"]
    samples = samples.sort_values(order, kind="stable")
    passes: dict[int, list[float]] = {k: [] for k in ks}
    majs: dict[int, list[float]] = {k: [] for k in ks}
    for _, group in samples.groupby("prompt_id", sort=True):
        correct = group["correct"].astype(bool).tolist()
        answers = [extract_answer(str(t), extract, pattern) for t in group["completion"]] if extract else []
        n, c = len(correct), sum(correct)
        for k in ks:
            if k > n:
                raise ValueError(
                    f"eval: k={k} but prompt {group['prompt_id'].iloc[0]} has only {n} samples; "
                    "set every eval.k <= eval.n."
                )
            passes[k].append(pass_at_k(n, c, k))
            if extract:
                majs[k].append(maj_at_k(answers, correct, k, rng))
    out = {}
    for k in ks:
        out[f"eval/pass@{k}"] = float(np.mean(passes[k])) if passes[k] else float("nan")
        if extract:
            out[f"eval/maj@{k}"] = float(np.mean(majs[k])) if majs[k] else float("nan")
    return out
