"""Acceptance: which scored candidates are accepted (where accept/reject is decided).

    from rsft_gen.accept import decide, acceptance_probability
    decided, metrics = decide(scored, recipe.accept, seed=0)
    acceptance_probability(log_p=[-1.0, -3.0], log_q=[-2.0, -2.0], log_m=1.0)  # -> [1.0, 0.135...]

`decide` adds `accept_prob` (the probability the rule accepted with) and
`accepted` (bool) to the scored frame and returns the round's acceptance
metrics. Rules (`accept.rule`):

- `threshold`: reward >= accept.threshold.
- `best_of_n`: the highest reward of each prompt; ties broken by a seeded draw.
- `top_fraction`: the top accept.fraction of each prompt's candidates
  (`scope: prompt`, RAFT "local") or of the whole round (`scope: global`).
- `all`: every candidate (the ablation baseline).
- `likelihood_ratio`: accept y with probability min(1, p(y|x) / (M q(y|x))),
  in log space; q drew y (column `log_q`), p is the target:
    reward_tilted    p ∝ q·exp(r/β): probability exp((r − r_max)/β), r_max a
                     number or `per_prompt` (RSO; with `samples_per_prompt`, RSO's
                     draw-without-replacement until that many are accepted);
    model            p = `target_model`'s likelihood of the completion;
    reward_weighted  p_i = r_i / Σ_j r_j over the round's candidates (r >= 0,
                     e.g. the `model_loss` reward on `generate.backend: dataset`,
                     where q_i = 1/N and M = N·max w: loss-weighted selection).
  log M is `accept.log_m`, or `auto`: for `model` the largest log p/q of a
  pilot sample (accept.pilot_fraction of the round, used only to set M, never
  accepted) plus accept.log_m_margin; for `reward_weighted` the exact maximum,
  since the candidates are the whole support. Every sample with p/q > M is a
  bound violation: counted in the metrics, and the run warns that the accepted
  set is then not an exact sample of p.

Non-finite rewards, log q or log p are never accepted (by any rule) and are
counted in `accept/nonfinite`.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from rsft_gen.config import AcceptConfig

log = logging.getLogger(__name__)


def acceptance_probability(log_p, log_q, log_m) -> np.ndarray:
    """min(1, p / (M q)) computed in log space; non-finite inputs give probability 0."""
    log_p, log_q, log_m = (np.asarray(x, dtype=float) for x in (log_p, log_q, log_m))
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, which we map to 0 below
        log_ratio = log_p - log_q - log_m
    prob = np.exp(np.minimum(log_ratio, 0.0))
    return np.where(np.isfinite(log_ratio), prob, 0.0)


def bound_violations(log_p, log_q, log_m) -> np.ndarray:
    """True where p/q > M (finite inputs only): there the rule cannot be exact."""
    log_p, log_q, log_m = (np.asarray(x, dtype=float) for x in (log_p, log_q, log_m))
    with np.errstate(invalid="ignore"):
        excess = log_p - log_q - log_m
    return np.isfinite(excess) & (excess > 0)


def top_k_per_group(reward: np.ndarray, groups: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Accept the k[i] highest finite rewards of row i's group, ties at the cut broken by a
    seeded draw. Returns (prob, accepted): prob is 1 above the cut, free slots / tied rows
    at the cut, 0 below it (and for non-finite rewards)."""
    n = len(reward)
    finite = np.isfinite(reward)
    r = np.where(finite, reward, -np.inf)
    order = np.lexsort((rng.random(n), -r, groups))  # by group, reward descending, random tie key
    g_sorted = groups[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    rank_sorted = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, dtype=int)
    rank[order] = rank_sorted
    accepted = finite & (rank < k)

    # The probability each row had: the cut is the lowest accepted reward of its group.
    frame = pd.DataFrame({"g": groups, "r": r, "acc": accepted, "finite": finite})
    cut = frame["g"].map(frame[frame.acc].groupby("g")["r"].min()).to_numpy(dtype=float)
    n_finite = frame.groupby("g")["finite"].transform("sum").to_numpy()
    above = frame.assign(a=finite & (r > cut)).groupby("g")["a"].transform("sum").to_numpy()
    tied = frame.assign(t=finite & (r == cut)).groupby("g")["t"].transform("sum").to_numpy()
    slots = np.minimum(k, n_finite) - above
    with np.errstate(invalid="ignore", divide="ignore"):
        at_cut = np.where(tied > 0, slots / np.maximum(tied, 1), 0.0)
    prob = np.where(r > cut, 1.0, np.where(r == cut, at_cut, 0.0))
    return np.where(finite, prob, 0.0), accepted


def _fraction_k(fraction: float, size: np.ndarray) -> np.ndarray:
    # ceil, minus a hair so that 0.28 * 25 = 7.000000000000001 keeps 7, not 8
    return np.maximum(np.ceil(fraction * size - 1e-9), 1).astype(int)


def _per_prompt_max(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    s = pd.Series(np.where(np.isfinite(values), values, np.nan))
    return s.groupby(groups).transform("max").to_numpy(dtype=float)


def _rso(reward: np.ndarray, groups: np.ndarray, beta: float, k: int, rng: np.random.Generator) -> np.ndarray:
    """RSO (Liu et al. 2023, Alg. 1): per prompt, sweep the remaining candidates, accepting
    each with exp((r - max remaining r)/β), until k are accepted or none remain."""
    accepted = np.zeros(len(reward), dtype=bool)
    finite = np.isfinite(reward)
    for idx in pd.Series(np.arange(len(reward))[finite]).groupby(groups[finite]).agg(list):
        remaining, taken = list(rng.permutation(idx)), 0
        while remaining and taken < k:
            r_max, keep = max(reward[remaining]), []
            for i in remaining:
                if taken < k and rng.random() < math.exp((reward[i] - r_max) / beta):
                    accepted[i], taken = True, taken + 1
                else:
                    keep.append(i)
            remaining = keep
    return accepted


def _column(df: pd.DataFrame, name: str, why: str) -> np.ndarray:
    if name not in df.columns:
        raise ValueError(f"accept: {why} needs the candidate column '{name}', which is missing (columns: {list(df.columns)}).")
    return df[name].to_numpy(dtype=float)


def likelihood_ratio(df: pd.DataFrame, cfg: AcceptConfig, rng: np.random.Generator, device: str = "cpu") -> tuple[pd.DataFrame, dict]:
    """The likelihood-ratio rule; adds log_p (where known), log_ratio (= log p/q − log M),
    pilot, accept_prob and accepted to df and returns its metrics."""
    n = len(df)
    reward = df["reward"].to_numpy(dtype=float)
    groups = pd.factorize(df["prompt_id"])[0] if n else np.zeros(0, dtype=int)
    log_q = df["log_q"].to_numpy(dtype=float) if "log_q" in df.columns else np.zeros(n)
    pilot = np.zeros(n, dtype=bool)
    metrics: dict = {}
    if cfg.target == "reward_tilted":
        # p/q = exp(r/β)/Z, so log p/q − log M = (r − r_max)/β; written as a difference so β → 0 stays finite.
        r_max = _per_prompt_max(reward, groups) if cfg.r_max == "per_prompt" else np.full(n, float(cfg.r_max))
        with np.errstate(invalid="ignore"):
            excess = (reward - r_max) / cfg.beta
        excess = np.where(np.isfinite(log_q), excess, np.nan)
        nonfinite = ~np.isfinite(reward) | ~np.isfinite(log_q)
        log_m = float(cfg.r_max) / cfg.beta if cfg.r_max != "per_prompt" else float("nan")
    else:
        if cfg.target == "model":
            from rsft_gen.accept_target import target_log_probs

            log_p = target_log_probs(df, cfg.target_model, device=device)
            log_q = _column(df, "log_q", "target: model")
        else:  # reward_weighted
            log_q = _column(df, "log_q", "target: reward_weighted")
            valid = np.isfinite(reward)
            if np.any(valid & (reward < 0)):
                raise ValueError(f"accept.target is reward_weighted, which needs rewards >= 0 (they are weights), but {int((valid & (reward < 0)).sum())} are negative; use a non-negative reward such as model_loss.")
            with np.errstate(divide="ignore"):
                log_p = np.log(reward) - np.log(reward[valid].sum()) if valid.any() else np.full(n, np.nan)
        df["log_p"] = log_p
        # A zero weight (log p = -inf) is a legitimate "never", not a broken input.
        bad_p = ~np.isfinite(log_p) if cfg.target == "model" else np.isnan(log_p)
        nonfinite = bad_p | ~np.isfinite(log_q) | ~np.isfinite(reward)
        with np.errstate(invalid="ignore"):
            ratio = log_p - log_q
        ratio = np.where(nonfinite | ~np.isfinite(ratio), np.nan, ratio)
        log_m = _resolve_log_m(ratio, cfg, rng, pilot, metrics)
        excess = ratio - log_m
    prob = acceptance_probability(excess, 0.0, 0.0)
    violated = bound_violations(excess, 0.0, 0.0) & ~pilot
    prob[pilot] = 0.0
    if cfg.target == "reward_tilted" and cfg.samples_per_prompt:
        # accept_prob then records each candidate's first-sweep probability; later sweeps raise it.
        accepted = _rso(np.where(nonfinite, np.nan, reward), groups, cfg.beta, cfg.samples_per_prompt, rng)
    else:
        accepted = rng.random(n) < prob
    df["log_ratio"], df["pilot"], df["accept_prob"], df["accepted"] = excess, pilot, prob, accepted

    evaluated = max(int((~pilot).sum()), 1)
    if np.isfinite(log_m):
        metrics["accept/log_m"] = log_m
    metrics |= {
        "accept/bound_violations": int(violated.sum()),
        "accept/bound_violation_fraction": float(violated.sum()) / evaluated,
        "accept/exact": float(not violated.any()),
        "accept/nonfinite": int(nonfinite.sum()),
    }
    if violated.any():
        worst = float(np.nanmax(excess[violated]))
        log.warning(
            "accept: %d of %d samples (%.2f%%) have p/q > M (log p/q exceeds log M by up to %.3f); "
            "the accepted set is NOT an exact sample of the target p. Raise accept.log_m or accept.log_m_margin "
            "(reward_tilted: accept.r_max, or use r_max: per_prompt).",
            int(violated.sum()), evaluated, 100.0 * violated.sum() / evaluated, worst,
        )
    return df, metrics


def _resolve_log_m(ratio: np.ndarray, cfg: AcceptConfig, rng: np.random.Generator, pilot: np.ndarray, metrics: dict) -> float:
    """log M: the recipe's number, or estimated (marks pilot rows in `pilot` in place)."""
    if cfg.log_m != "auto":
        return float(cfg.log_m)
    finite = np.flatnonzero(np.isfinite(ratio))
    if len(finite) == 0:
        log.warning("accept: log_m=auto but no candidate has a finite log p/q; nothing can be accepted")
        return float("inf")
    if cfg.target == "reward_weighted":
        return float(ratio[finite].max()) + cfg.log_m_margin  # the candidates are the whole support: exact
    size = min(len(finite), max(1, math.ceil(cfg.pilot_fraction * len(ratio))))
    chosen = rng.choice(finite, size=size, replace=False)
    pilot[chosen] = True
    log_m = float(ratio[chosen].max()) + cfg.log_m_margin
    metrics["accept/pilot_samples"] = size
    log.info("accept: log M = %.4f estimated from a pilot of %d samples (max log p/q %.4f + margin %.4f); pilot samples are not accepted",
             log_m, size, log_m - cfg.log_m_margin, cfg.log_m_margin)
    return log_m


def decide(scored: pd.DataFrame, cfg: AcceptConfig, seed: int, *, device: str = "cpu") -> tuple[pd.DataFrame, dict]:
    """Apply `cfg.rule`; returns (scored + accept_prob + accepted, metrics)."""
    df = scored.copy().reset_index(drop=True)
    rng = np.random.default_rng(seed)
    reward = df["reward"].to_numpy(dtype=float)
    finite = np.isfinite(reward)
    groups = pd.factorize(df["prompt_id"])[0] if len(df) else np.zeros(0, dtype=int)
    metrics: dict = {}
    if cfg.rule == "likelihood_ratio":
        df, metrics = likelihood_ratio(df, cfg, rng, device)
    else:
        if cfg.rule == "all":
            prob = finite.astype(float)
            accepted = finite.copy()
        elif cfg.rule == "threshold":
            prob = (finite & (np.where(finite, reward, -np.inf) >= cfg.threshold)).astype(float)
            accepted = prob > 0
        elif cfg.rule == "best_of_n":
            prob, accepted = top_k_per_group(reward, groups, np.ones(len(df), dtype=int), rng)
        elif cfg.rule == "top_fraction":
            if cfg.scope == "global":
                groups = np.zeros(len(df), dtype=int)
            size = pd.Series(groups).groupby(groups).transform("size").to_numpy()
            prob, accepted = top_k_per_group(reward, groups, _fraction_k(cfg.fraction, size), rng)
        else:
            raise ValueError(f"recipe key 'accept.rule' is '{cfg.rule}'; choose threshold, best_of_n, top_fraction, all or likelihood_ratio.")
        df["accept_prob"], df["accepted"] = prob, accepted
        metrics["accept/nonfinite"] = int((~finite).sum())
    n = max(len(df), 1)
    acc = df["accepted"].to_numpy(dtype=bool)
    metrics = {
        "accept/candidates": len(df),
        "accept/accepted": int(acc.sum()),
        "accept/rate": float(acc.sum()) / n,
        "accept/expected_rate": float(df["accept_prob"].sum()) / n,
        "accept/reward_mean": float(reward[finite].mean()) if finite.any() else float("nan"),
        "accept/reward_accepted_mean": float(reward[acc].mean()) if acc.any() else float("nan"),
        **metrics,
    }
    log.info("accept (%s): %d of %d candidates accepted (%.1f%%)", cfg.rule, acc.sum(), len(df), 100.0 * acc.sum() / n)
    return df, metrics
