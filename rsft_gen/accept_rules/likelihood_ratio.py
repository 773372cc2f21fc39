"""`accept.rule: likelihood_ratio`: exact rejection sampling of a target p from the sampler q.

    accept: {rule: likelihood_ratio, target: reward_tilted, beta: 0.5, r_max: 1.0}
    accept: {rule: likelihood_ratio, target: model, target_model: path/to/model, log_m: auto}
    accept: {rule: likelihood_ratio, target: model, target_model: path/to/model, log_m: per_prompt}

Accept y with probability min(1, p(y|x) / (M q(y|x))), in log space; q drew y
(column `log_q`). One function per target computes log p/q − log M:

    reward_tilted    p ∝ q·exp(r/β): probability exp((r − r_max)/β), r_max a number or
                     `per_prompt` (RSO; with `samples_per_prompt`, RSO's draw-without-
                     replacement until that many are accepted). p is the tilt of the
                     sampler's own distribution (after temperature / top-k / top-p).
    model            p = `target_model`'s likelihood of the completion.
    reward_weighted  p_i = r_i / Σ_j r_j over the round's candidates (r >= 0, e.g. the
                     `model_loss` reward on `generate.backend: dataset`, where q_i = 1/N
                     and M = N·max w: loss-weighted selection).

log M is `accept.log_m`: a number; `auto`, for `model` the largest log p/q of a
pilot sample (accept.pilot_fraction of the round, used only to set M, never
accepted) plus accept.log_m_margin, for `reward_weighted` the exact maximum
(the candidates are the whole support); or `per_prompt` (`model` only): the
same pilot estimate taken within each prompt, so one high-ratio prompt no
longer lowers every other prompt's acceptance; still exact per prompt.

What is exact, in the metrics: every sample with p/q > M is a bound violation
(`accept/bound_violations`). For `model`, the sampler can only draw from its own
support, so the accepted set is an exact sample of p restricted to supp(q); the
covered mass p(supp q) = E_q[p/q] is estimated from all the round's candidates
(`accept/target_coverage`, with `accept/target_coverage_se`). `accept/exact` is 1
only when no bound was violated and either the sampler has full support (no
top-k / top-p truncation) or the coverage is 1 within two standard errors.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rsft_gen.accept_rules.base import Decision, Rule, acceptance_probability, bound_violations, prompt_groups

log = logging.getLogger("rsft_gen.accept")
COVERAGE_Z = 2.0  # "coverage is 1 within its error": within this many standard errors


@dataclass
class Ratio:
    """What a target gives: log p/q − log M per row and how M was set."""

    excess: np.ndarray  # log p/q − log M; NaN where unknown
    nonfinite: np.ndarray  # bad reward / log q / log p: never accepted
    log_m: float = float("nan")  # the round's log M when it is one number
    pilot: np.ndarray | None = None  # rows used only to estimate M
    log_ratio: np.ndarray | None = None  # log p/q where p is a distribution of its own (coverage)
    not_exact: str = ""  # why exactness is not claimed even without violations
    columns: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def _column(df: pd.DataFrame, name: str, why: str) -> np.ndarray:
    if name not in df.columns:
        raise ValueError(
            f"accept: {why} needs the candidate column '{name}', which is missing (columns: {list(df.columns)})."
        )
    return df[name].to_numpy(dtype=float)


def _per_prompt_max(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    s = pd.Series(np.where(np.isfinite(values), values, np.nan))
    return s.groupby(groups).transform("max").to_numpy(dtype=float)


def reward_tilted(df: pd.DataFrame, cfg, rng: np.random.Generator, ctx) -> Ratio:
    """p ∝ q·exp(r/β), so log p/q − log M = (r − r_max)/β; a difference, so β → 0 stays finite."""
    n = len(df)
    reward = df["reward"].to_numpy(dtype=float)
    log_q = df["log_q"].to_numpy(dtype=float) if "log_q" in df.columns else np.zeros(n)
    per_prompt = cfg.r_max == "per_prompt"
    r_max = _per_prompt_max(reward, prompt_groups(df)) if per_prompt else np.full(n, float(cfg.r_max))
    with np.errstate(invalid="ignore"):
        excess = (reward - r_max) / cfg.beta
    excess = np.where(np.isfinite(log_q), excess, np.nan)
    why = ""
    if per_prompt:
        why = (
            "accept.r_max: per_prompt takes each prompt's bound from its own samples "
            "(RSO's approximation: the best sample is always accepted)"
        )
    return Ratio(
        excess,
        ~np.isfinite(reward) | ~np.isfinite(log_q),
        log_m=float("nan") if per_prompt else float(cfg.r_max) / cfg.beta,
        not_exact=why,
    )


def model(df: pd.DataFrame, cfg, rng: np.random.Generator, ctx) -> Ratio:
    """p = the target model's likelihood of exactly the sampled tokens."""
    from rsft_gen import accept_target  # torch and transformers, only for this target

    log_p = accept_target.target_log_probs(df, cfg.target_model, device=ctx.device)
    log_q = _column(df, "log_q", "target: model")
    nonfinite = ~np.isfinite(log_p) | ~np.isfinite(log_q) | ~np.isfinite(df["reward"].to_numpy(dtype=float))
    return _with_log_m(log_p, log_q, nonfinite, cfg, rng, prompt_groups(df), coverage=True)


def reward_weighted(df: pd.DataFrame, cfg, rng: np.random.Generator, ctx) -> Ratio:
    """p_i = r_i / Σ r over the round's candidates, which are q's whole support."""
    reward = df["reward"].to_numpy(dtype=float)
    log_q = _column(df, "log_q", "target: reward_weighted")
    valid = np.isfinite(reward)
    if np.any(valid & (reward < 0)):
        raise ValueError(
            f"accept.target is reward_weighted, which needs rewards >= 0 (they are weights), but "
            f"{int((valid & (reward < 0)).sum())} are negative; use a non-negative reward such as model_loss."
        )
    with np.errstate(divide="ignore"):
        log_p = np.log(reward) - np.log(reward[valid].sum()) if valid.any() else np.full(len(df), np.nan)
    # A zero weight (log p = -inf) is a legitimate "never", not a broken input.
    nonfinite = np.isnan(log_p) | ~np.isfinite(log_q) | ~valid
    return _with_log_m(log_p, log_q, nonfinite, cfg, rng, prompt_groups(df), coverage=False)


TARGETS = {"reward_tilted": reward_tilted, "model": model, "reward_weighted": reward_weighted}


def _with_log_m(log_p, log_q, nonfinite, cfg, rng, groups, coverage: bool) -> Ratio:
    with np.errstate(invalid="ignore"):
        ratio = log_p - log_q
    ratio = np.where(nonfinite | ~np.isfinite(ratio), np.nan, ratio)
    pilot = np.zeros(len(ratio), dtype=bool)
    metrics: dict = {}
    if cfg.log_m == "per_prompt":
        log_m = _per_prompt_log_m(ratio, groups, cfg, rng, pilot, metrics)
    else:
        log_m = _resolve_log_m(ratio, cfg, rng, pilot, metrics)
    return Ratio(
        ratio - log_m,
        nonfinite,
        log_m=float(log_m) if np.ndim(log_m) == 0 else float("nan"),
        pilot=pilot,
        log_ratio=ratio if coverage else None,
        columns={"log_p": log_p},
        metrics=metrics,
    )


def _resolve_log_m(ratio: np.ndarray, cfg, rng: np.random.Generator, pilot: np.ndarray, metrics: dict) -> float:
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
    log.info(
        "accept: log M = %.4f estimated from a pilot of %d samples (max log p/q %.4f + margin %.4f); "
        "pilot samples are not accepted",
        log_m,
        size,
        log_m - cfg.log_m_margin,
        cfg.log_m_margin,
    )
    return log_m


def _per_prompt_log_m(
    ratio: np.ndarray, groups: np.ndarray, cfg, rng: np.random.Generator, pilot: np.ndarray, metrics: dict
) -> np.ndarray:
    """One log M per prompt, from a pilot of accept.pilot_fraction of that prompt's own candidates
    (at least one, and at least one left to accept). A prompt with fewer than two finite
    log p/q gets no bound and accepts nothing. Conditional on its pilot, each prompt's
    acceptance is exact rejection sampling of p(.|x) with its own M_x."""
    log_m = np.full(len(ratio), np.inf)
    no_bound = 0
    for idx in pd.Series(np.arange(len(ratio))).groupby(groups).agg(list):
        idx = np.asarray(idx)
        finite = idx[np.isfinite(ratio[idx])]
        size = min(len(finite) - 1, max(1, math.ceil(cfg.pilot_fraction * len(idx))))
        if size < 1:
            no_bound += 1
            continue
        chosen = rng.choice(finite, size=size, replace=False)
        pilot[chosen] = True
        log_m[idx] = ratio[chosen].max() + cfg.log_m_margin
    metrics["accept/pilot_samples"] = int(pilot.sum())
    metrics["accept/prompts_without_bound"] = no_bound
    bounded = np.isfinite(log_m)
    if bounded.any():
        per_prompt = pd.Series(log_m[bounded]).groupby(groups[bounded]).first()
        metrics |= {
            "accept/log_m_min": float(per_prompt.min()),
            "accept/log_m_mean": float(per_prompt.mean()),
            "accept/log_m_max": float(per_prompt.max()),
        }
    log.info(
        "accept: log M per prompt from %d pilot samples (pilot_fraction %.2f of each prompt); "
        "%d prompts had too few to bound",
        int(pilot.sum()),
        cfg.pilot_fraction,
        no_bound,
    )
    return log_m


def coverage_estimate(log_ratio: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """p(supp q) = E_q[p/q], estimated by the mean of p/q over the round's candidates, and its
    standard error with prompts as strata (the prompts are fixed; each prompt's samples are iid)."""
    ok = np.isfinite(log_ratio)
    if not ok.any():
        return float("nan"), float("nan")
    w, g = np.exp(log_ratio[ok]), groups[ok]
    n = len(w)
    stats = pd.DataFrame({"w": w, "g": g}).groupby("g")["w"].agg(["size", "var"])
    pooled = float(np.var(w, ddof=1)) if n > 1 else 0.0
    var = stats["var"].where(stats["size"] > 1, pooled).fillna(pooled)
    return float(w.mean()), float(math.sqrt(float((stats["size"] * var).sum())) / n)


def apply(df: pd.DataFrame, cfg, rng: np.random.Generator, ctx) -> Decision:
    r = TARGETS[cfg.target](df, cfg, rng, ctx)
    n = len(df)
    pilot = r.pilot if r.pilot is not None else np.zeros(n, dtype=bool)
    prob = acceptance_probability(r.excess, 0.0, 0.0)
    violated = bound_violations(r.excess, 0.0, 0.0) & ~pilot
    prob[pilot] = 0.0
    if cfg.target == "reward_tilted" and cfg.samples_per_prompt:
        # accept_prob then records each candidate's first-sweep probability; later sweeps raise it.
        reward = df["reward"].to_numpy(dtype=float)
        accepted = _rso(np.where(r.nonfinite, np.nan, reward), prompt_groups(df), cfg.beta, cfg.samples_per_prompt, rng)
    else:
        accepted = rng.random(n) < prob

    evaluated = max(int((~pilot).sum()), 1)
    metrics = dict(r.metrics)
    if np.isfinite(r.log_m):
        metrics["accept/log_m"] = r.log_m
    metrics |= {
        "accept/bound_violations": int(violated.sum()),
        "accept/bound_violation_fraction": float(violated.sum()) / evaluated,
        "accept/nonfinite": int(r.nonfinite.sum()),
    }
    if violated.any():
        worst = float(np.nanmax(r.excess[violated]))
        log.warning(
            "accept: %d of %d samples (%.2f%%) have p/q > M (log p/q exceeds log M by up to %.3f); "
            "the accepted set is NOT an exact sample of the target p. Raise accept.log_m or accept.log_m_margin "
            "(reward_tilted: accept.r_max, or use r_max: per_prompt).",
            int(violated.sum()),
            evaluated,
            100.0 * violated.sum() / evaluated,
            worst,
        )
    metrics |= exactness(r, violated.any(), prompt_groups(df), ctx)
    columns = {**r.columns, "log_ratio": r.excess, "pilot": pilot}
    return Decision(prob, accepted, columns, metrics)


def exactness(r: Ratio, violated: bool, groups: np.ndarray, ctx) -> dict:
    """accept/target_coverage (± se) and accept/exact, with the one line saying what the set is a sample of."""
    truncation = ctx.truncation
    if (
        r.log_ratio is None
    ):  # p is defined on q's own support (tilted, or the whole labelled set): covered by construction
        cov, se = 1.0, 0.0
    else:
        cov, se = coverage_estimate(r.log_ratio, groups)
    full_support = truncation is not None and not truncation
    covered = full_support or (np.isfinite(cov) and cov + COVERAGE_Z * se >= 1.0)
    exact = not violated and not r.not_exact and covered
    sampler = f" (the sampler truncates: {', '.join(truncation)})" if truncation else ""
    if violated:
        pass  # the warning above already said it
    elif r.not_exact:
        log.info("accept: the accepted set approximates p: %s.", r.not_exact)
    elif not covered:
        log.warning(
            "accept: exact sample of p restricted to the sampler's support (covering ~%.1f%% ± %.1f%% of p)%s; "
            "not a sample of p itself. Sampling without top-k / top-p truncation covers all of p.",
            100 * cov,
            100 * se,
            sampler,
        )
    elif r.log_ratio is None:
        log.info(
            "accept: exact sample of p (no bound violated; p is defined on the sampler's own distribution%s)",
            f", truncated by {', '.join(truncation)}" if truncation else "",
        )
    else:
        why = "the sampler has full support" if full_support else f"estimated coverage {cov:.3f} ± {se:.3f}"
        log.info("accept: exact sample of p (no bound violated; %s)", why)
    return {"accept/target_coverage": cov, "accept/target_coverage_se": se, "accept/exact": float(exact)}


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


def check(recipe):
    """Recipe problems of this rule, as (key, message) pairs."""
    a = recipe.accept
    if a.target == "model" and not a.target_model:
        yield "accept.target_model", "is not set; target: model needs the path of the target model."
    if a.target == "reward_weighted" and recipe.generate.backend != "dataset":
        yield (
            "accept.target",
            "is reward_weighted, which weights a fixed labelled set (q uniform over it); "
            "set generate.backend: dataset, or use reward_tilted for sampled candidates.",
        )
    if a.log_m == "per_prompt" and a.target != "model":
        yield (
            "accept.log_m",
            (
                "is per_prompt, which estimates a bound from each prompt's own pilot samples of a target model "
                "(accept.target: model); "
                f"with target: {a.target} use "
                + (
                    "accept.r_max: per_prompt."
                    if a.target == "reward_tilted"
                    else "log_m: auto (the exact bound of the whole set)."
                )
            ),
        )


RULE = Rule(
    name="likelihood_ratio",
    apply=apply,
    help="exact rejection sampling of a target p from the sampler q: accept with min(1, p/(M q)) "
    "(RSO, loss-weighted selection)",
    keys=("target", "beta", "r_max", "target_model", "log_m", "pilot_fraction", "log_m_margin", "samples_per_prompt"),
    choices={"target": tuple(TARGETS)},
    needs_log_q=lambda cfg: True,
    needs_engine_memory=lambda cfg: cfg.target == "model",  # the target model is loaded beside the sampler
    check=check,
)
