"""Finding reward functions and scoring candidates with them.

    from rsft_gen.rewards import load
    fn = load("exact_match")                 # built-in
    fn = load("my_pkg.rewards:brevity")      # any importable function
    # or an entry point in the group "rsft_gen.rewards" of any installed package

Contract (TRL's): fn(prompts, completions, **columns) -> list[float | None];
every prompt-set column arrives as a keyword argument, plus `group_ids`.
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable

import numpy as np
import pandas as pd

from rsft_gen.config import RecipeError, RewardSpec

log = logging.getLogger(__name__)
GROUP = "rsft_gen.rewards"
# Columns the loop adds that are not prompt-set columns; rewards don't get them.
_INTERNAL = {"prompt_id", "sample_index", "prompt", "completion", "token_ids", "num_tokens", "log_q", "finish_reason"}


class RewardError(RuntimeError):
    """A reward failed or returned something unusable; names the reward and sample."""


@dataclass
class FoundReward:
    name: str
    target: str  # "module:function"
    source: str  # "built-in", or the distribution that provides the entry point


def _import_target(target: str) -> Callable:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part)
    return fn


def available() -> tuple[list[FoundReward], dict[str, str]]:
    """Every reward we can find, and the entry points that failed to load (name -> error)."""
    from reward import BUILTIN

    found = [FoundReward(n, t, "built-in") for n, t in BUILTIN.items()]
    broken: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist else "?"
        found.append(FoundReward(ep.name, ep.value, f"entry point of {dist}"))
    return found, broken


def load(spec: str | RewardSpec) -> Callable:
    """The reward callable for a built-in name, an entry-point name, or 'module:function'."""
    name = spec.name if isinstance(spec, RewardSpec) else spec
    from reward import BUILTIN

    if name in BUILTIN:
        return _import_target(BUILTIN[name])
    for ep in entry_points(group=GROUP, name=name):
        try:
            return ep.load()
        except Exception as e:
            raise RecipeError(f"reward '{name}': its entry point '{ep.value}' failed to import: {type(e).__name__}: {e}") from None
    if ":" in name:
        try:
            return _import_target(name)
        except (ImportError, AttributeError) as e:
            raise RecipeError(f"reward '{name}' could not be imported ({type(e).__name__}: {e}); check the module is installed and the function name.") from None
    names = sorted(f.name for f in available()[0])
    raise RecipeError(f"reward '{name}' not found; available: {', '.join(names)}; or give 'package.module:function'.")


def _check_output(name: str, values, n: int, on_error: str) -> tuple[list[float | None], int]:
    """Validate one reward's output; returns (values, number of bad samples replaced)."""
    if not isinstance(values, (list, tuple, np.ndarray)) or len(values) != n:
        got = f"length {len(values)}" if hasattr(values, "__len__") else f"type {type(values).__name__}"
        raise RewardError(f"reward '{name}' returned {got} for {n} completions; it must return a list with one float or None per completion.")
    out, bad = [], 0
    for i, v in enumerate(values):
        ok = v is None or (isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and math.isfinite(float(v)))
        if ok:
            out.append(None if v is None else float(v))
            continue
        if on_error == "raise":
            raise RewardError(f"reward '{name}' returned {v!r} for sample {i}; rewards must be finite floats or None (set on_error: zero or skip to tolerate this).")
        bad += 1
        out.append(0.0 if on_error == "zero" else None)
    return out, bad


def score(cands: pd.DataFrame, specs: list[RewardSpec]) -> tuple[pd.DataFrame, dict]:
    """Add `reward/<name>` columns and the weighted `reward`; returns (frame, counts)."""
    df = cands.copy()
    prompts, completions = df["prompt"].tolist(), df["completion"].tolist()
    columns = {c: df[c].tolist() for c in df.columns if c not in _INTERNAL}
    columns["group_ids"] = df["prompt_id"].tolist()
    total = np.zeros(len(df))
    has_opinion = np.zeros(len(df), dtype=bool)
    counts: dict[str, float] = {}
    for spec in specs:
        fn = load(spec)
        try:
            values = fn(prompts, completions, **columns, **dict(spec.kwargs))
            values, bad = _check_output(spec.name, values, len(df), spec.on_error)
        except RewardError:
            raise
        except Exception as e:
            if spec.on_error == "raise":
                raise RewardError(f"reward '{spec.name}' raised {type(e).__name__}: {e} (set on_error: zero or skip to tolerate this).") from e
            log.warning("reward '%s' raised %s: %s; on_error=%s for all %d samples", spec.name, type(e).__name__, e, spec.on_error, len(df))
            values, bad = [0.0 if spec.on_error == "zero" else None] * len(df), len(df)
        col = np.array([np.nan if v is None else v for v in values], dtype=float)
        df[f"reward/{spec.name}"] = col
        opinion = ~np.isnan(col)
        total += np.where(opinion, spec.weight * np.nan_to_num(col), 0.0)
        has_opinion |= opinion
        counts[f"reward/{spec.name}/errors"] = bad
        counts[f"reward/{spec.name}/none"] = int((~opinion).sum())
    # No reward had an opinion: NaN, which no acceptance rule accepts.
    df["reward"] = np.where(has_opinion, total, np.nan)
    return df, counts
