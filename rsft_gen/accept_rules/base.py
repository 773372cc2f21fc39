"""What every acceptance rule is: a `Rule` declaration, and the arithmetic rules share.

    from rsft_gen.accept_rules.base import Rule, Decision
    RULE = Rule(name="threshold", apply=apply, keys=("threshold",), help="reward >= accept.threshold")

A rule's `apply(df, cfg, rng, ctx)` gets the round's scored candidates (one row
each: prompt_id, reward, log_q, ...), the `accept` config section, a seeded
generator and an `AcceptContext`, and returns a `Decision`. `rsft_gen.accept.decide`
adds the columns and the metrics every rule shares. The declaration fields are
what the rest of the package reads instead of testing rule names:

- `keys`:     the `accept.*` keys the rule reads (its part of the flat section);
- `choices`:  allowed values of those keys, e.g. {"target": ("model", ...)}, checked by config.validate;
- `needs_log_q(cfg)`:          the generator must record log q (config.records_log_q);
- `needs_engine_memory(cfg)`:  free the generation engine before applying (a second model is loaded);
- `check(recipe)`:             recipe problems beyond types, as (key, message) pairs.

Nothing here imports rsft_gen.config at run time: config imports the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Optional

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from rsft_gen.config import AcceptConfig, Recipe


@dataclass
class AcceptContext:
    """What a rule may need besides its own config."""

    device: str = "cpu"  # where a target model is scored
    # How the sampler truncated its distribution, e.g. ["top_p=0.9"]; [] = full support; None = not known.
    truncation: Optional[list[str]] = None


@dataclass
class Decision:
    prob: np.ndarray  # the probability each candidate was accepted with
    accepted: np.ndarray  # bool
    columns: dict = field(default_factory=dict)  # extra columns for scored.parquet (log_p, pilot, ...)
    metrics: dict = field(default_factory=dict)  # accept/* metrics of this rule


def _never(cfg) -> bool:
    return False


@dataclass(frozen=True)
class Rule:
    name: str
    apply: Callable[[pd.DataFrame, "AcceptConfig", np.random.Generator, AcceptContext], Decision]
    help: str
    keys: tuple[str, ...] = ()
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    needs_log_q: Callable[["AcceptConfig"], bool] = _never
    needs_engine_memory: Callable[["AcceptConfig"], bool] = _never
    check: Callable[["Recipe"], Iterable[tuple[str, str]]] = lambda recipe: ()


# --- arithmetic shared by rules --------------------------------------------------------------


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


def prompt_groups(df: pd.DataFrame) -> np.ndarray:
    """0..P-1 per row, by prompt_id."""
    return pd.factorize(df["prompt_id"])[0] if len(df) else np.zeros(0, dtype=int)


def top_k_per_group(
    reward: np.ndarray, groups: np.ndarray, k: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
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
