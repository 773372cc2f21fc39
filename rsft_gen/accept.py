"""Acceptance: which scored candidates are accepted (where accept/reject is decided).

    from rsft_gen.accept import decide, acceptance_probability
    decided, metrics = decide(scored, recipe.accept, seed=0)
    acceptance_probability(log_p=[-1.0, -3.0], log_q=[-2.0, -2.0], log_m=1.0)  # -> [1.0, 0.135...]

`decide` looks the rule up in the registry (`rsft_gen/accept_rules/`, one module
per rule: threshold, best_of_n, top_fraction, all, likelihood_ratio), applies it,
adds `accept_prob` (the probability the rule accepted with) and `accepted`
(bool) to the scored frame, plus the rule's own columns (log_p, log_ratio,
pilot for likelihood_ratio), and returns the round's acceptance metrics.

Non-finite rewards, log q or log p are never accepted (by any rule) and are
counted in `accept/nonfinite`.

What is exact: `likelihood_ratio` reports `accept/exact` (see
accept_rules/likelihood_ratio.py), and `selection_exactness` says whether the
selection phase kept that property for the SFT set (`select/exact`).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from rsft_gen.accept_rules import AcceptContext, get_rule
from rsft_gen.accept_rules.base import acceptance_probability, bound_violations, top_k_per_group  # noqa: F401  (public)
from rsft_gen.config import AcceptConfig, GenerateConfig, SelectConfig

log = logging.getLogger(__name__)


def decide(
    scored: pd.DataFrame, cfg: AcceptConfig, seed: int, *, device: str = "cpu", truncation: list[str] | None = None
) -> tuple[pd.DataFrame, dict]:
    """Apply `cfg.rule`; returns (scored + accept_prob + accepted, metrics).

    `truncation`: how the sampler cut its distribution (`sampler_truncation(recipe.generate)`);
    None when unknown, in which case exactness rests on the estimated coverage alone."""
    df = scored.copy().reset_index(drop=True)
    rng = np.random.default_rng(seed)
    rule = get_rule(cfg.rule)
    d = rule.apply(df, cfg, rng, AcceptContext(device=device, truncation=truncation))
    for name, values in d.columns.items():
        df[name] = values
    df["accept_prob"], df["accepted"] = d.prob, d.accepted
    reward = df["reward"].to_numpy(dtype=float)
    finite = np.isfinite(reward)
    n = max(len(df), 1)
    acc = df["accepted"].to_numpy(dtype=bool)
    metrics = {
        "accept/candidates": len(df),
        "accept/accepted": int(acc.sum()),
        "accept/rate": float(acc.sum()) / n,
        "accept/expected_rate": float(df["accept_prob"].sum()) / n,
        "accept/reward_mean": float(reward[finite].mean()) if finite.any() else float("nan"),
        "accept/reward_accepted_mean": float(reward[acc].mean()) if acc.any() else float("nan"),
        "accept/nonfinite": int((~finite).sum()),
        **d.metrics,
    }
    log.info("accept (%s): %d of %d candidates accepted (%.1f%%)", cfg.rule, acc.sum(), len(df), 100.0 * acc.sum() / n)
    return df, metrics


def sampler_truncation(gen: GenerateConfig) -> list[str]:
    """The settings by which the sampler leaves part of the model's distribution out ([] = full support)."""
    cut = []
    if gen.temperature == 0:
        cut.append("temperature=0 (greedy)")
    if gen.top_k and gen.top_k > 0:
        cut.append(f"top_k={gen.top_k}")
    if gen.top_p < 1.0:
        cut.append(f"top_p={gen.top_p}")
    min_p = (gen.vllm or {}).get("min_p") if isinstance(gen.vllm, dict) else None
    if min_p:
        cut.append(f"min_p={min_p}")
    return cut


def selection_exactness(select_cfg: SelectConfig, accept_metrics: dict) -> dict:
    """`select/exact`: is the SFT set still an exact sample of p, as the accepted column is?

    Only for rules that report `accept/exact`. Dedup removes repeated samples, so frequent
    outcomes are under-represented; mixed-in seed data is not drawn from p; the difficulty
    filter keeps a prompt depending on its candidates' correctness, which conditions the
    accepted samples on their own values. The per-prompt cap keeps the first accepted samples
    of each prompt in sampling order: they stay iid from p(.|x) (tested in
    tests/test_accept_exact.py), only fewer."""
    if "accept/exact" not in accept_metrics:
        return {}
    breaking = []
    if select_cfg.dedup:
        breaking.append(f"select.dedup=true (by {select_cfg.dedup_key})")
    if select_cfg.difficulty_filter:
        breaking.append("select.difficulty_filter=true")
    if select_cfg.mix_seed_fraction > 0:
        breaking.append(f"select.mix_seed_fraction={select_cfg.mix_seed_fraction}")
    exact = bool(accept_metrics["accept/exact"]) and not breaking
    if breaking and accept_metrics["accept/exact"]:
        log.warning(
            "select: the SFT set is NOT an exact sample of p although the accepted column is: %s; "
            "set select.dedup=false, select.difficulty_filter=false and select.mix_seed_fraction=0 to keep it exact.",
            ", ".join(breaking),
        )
    return {"select/exact": float(exact)}
