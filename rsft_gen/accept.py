"""Acceptance: which scored candidates are accepted (where accept/reject is decided).

    from rsft_gen.accept import decide
    decided, metrics = decide(scored, recipe.accept, seed=0)

`decide` adds `accept_prob` (the probability the rule accepted with) and
`accepted` (bool) to the scored frame and returns the round's acceptance
metrics. NaN or infinite rewards are never accepted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rsft_gen.config import AcceptConfig


def acceptance_probability(log_p, log_q, log_m) -> np.ndarray:
    """min(1, p / (M q)) computed in log space; non-finite inputs give probability 0."""
    log_p, log_q, log_m = (np.asarray(x, dtype=float) for x in (log_p, log_q, log_m))
    log_ratio = log_p - log_q - log_m
    prob = np.exp(np.minimum(log_ratio, 0.0))
    return np.where(np.isfinite(log_ratio), prob, 0.0)


def decide(scored: pd.DataFrame, cfg: AcceptConfig, seed: int) -> tuple[pd.DataFrame, dict]:
    df = scored.copy()
    reward = df["reward"].to_numpy(dtype=float)
    finite = np.isfinite(reward)
    if cfg.rule == "all":
        prob = np.ones(len(df))
    elif cfg.rule == "threshold":
        prob = (finite & (np.nan_to_num(reward, nan=-np.inf) >= cfg.threshold)).astype(float)
    else:
        raise NotImplementedError(f"accept.rule '{cfg.rule}' is not implemented yet")
    prob = np.where(finite | (cfg.rule == "all"), prob, 0.0)
    rng = np.random.default_rng(seed)
    df["accept_prob"] = prob
    df["accepted"] = rng.random(len(df)) < prob
    n = max(len(df), 1)
    metrics = {
        "accept/candidates": len(df),
        "accept/accepted": int(df["accepted"].sum()),
        "accept/rate": float(df["accepted"].sum()) / n,
        "accept/expected_rate": float(prob.sum()) / n,
        "accept/nonfinite_rewards": int((~finite).sum()),
    }
    return df, metrics
