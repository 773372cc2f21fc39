"""Finding reward functions and scoring candidates with them.

    from rsft_gen.rewards import load, score
    fn = load("exact_match")                 # built-in
    fn = load("my_pkg.rewards:brevity")      # any importable function
    # or an entry point in the group "rsft_gen.rewards" of any installed package
    fn = load(spec)                          # a RewardSpec: its kwargs checked, a factory built
    scored, counts = score(candidates, recipe.rewards)

Contract (TRL's GRPOTrainer, see rsft_gen/reward_call.py): every argument by
keyword, fn(prompts=, completions=, completion_ids=, <each prompt-set column>=,
group_ids=, <the recipe's kwargs>, trainer_state= / log_extra= / log_metric=
where named) -> list[float | None]; None means no opinion. What a reward logs
goes under its name: log_metric(name, value) to `reward/<reward>/<name>` in the
round's metrics (metrics.jsonl, W&B; the mean when logged several times),
log_extra(column, values) to the column `reward/<reward>/<column>` of
scored.parquet and the W&B samples table.

Errors: a wrong output (wrong length, a value that is not a finite float or
None) or an exception stops the run with a RewardError naming the reward and
the sample, unless the recipe's `on_error` is `zero` or `skip` (the bad values
become 0.0 or None). A reward is called once on the whole batch, so for an
exception "the sample" is the first one that also raises when scored on its
own (the first 200 are tried); an exception under zero/skip affects every
sample of that call. Either way `score()` counts them (`reward/<name>/errors`).
"""

from __future__ import annotations

import importlib
import logging
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Callable

import numpy as np
import pandas as pd

from rsft_gen.config import RecipeError, RewardSpec
from rsft_gen.reward_call import Batch, RoundState, Signature, arguments, build, check_call, check_kwargs, one_sample

log = logging.getLogger(__name__)
GROUP = "rsft_gen.rewards"


class RewardError(RuntimeError):
    """A reward failed or returned something unusable; names the reward and sample."""


@dataclass
class FoundReward:
    name: str
    target: str  # "module:function"
    source: str  # "built-in", or "entry point of <distribution>"
    description: str = ""  # first line of the function's docstring


def _import_target(target: str) -> Callable:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part)
    return fn


def describe(fn: Callable) -> str:
    """The first line of a reward's docstring (its function's, else its module's)."""
    doc = (
        getattr(fn, "__doc__", None)
        or getattr(sys.modules.get(getattr(fn, "__module__", ""), None), "__doc__", None)
        or ""
    )
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


def available() -> tuple[list[FoundReward], dict[str, str]]:
    """Every reward we can find, and those that failed to load (name -> error).

    Built-ins and entry points of the group "rsft_gen.rewards" are each imported
    to read their description; one that fails is reported by name, the rest still listed.
    """
    from reward import BUILTIN

    candidates = [(n, t, "built-in", lambda t=t: _import_target(t)) for n, t in BUILTIN.items()]
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist else "?"
        candidates.append((ep.name, ep.value, f"entry point of {dist}", ep.load))
    found: list[FoundReward] = []
    broken: dict[str, str] = {}
    for name, target, source, load_fn in candidates:
        try:
            fn = load_fn()
        except Exception as e:  # a broken plugin must not hide the others
            broken[name] = f"{source} '{target}': {type(e).__name__}: {e}"
            continue
        found.append(FoundReward(name, target, source, describe(fn)))
    return found, broken


def _find(name: str) -> tuple[Callable, str]:
    """(callable, where it came from) for a built-in name, an entry-point name, or 'module:function'."""
    from reward import BUILTIN

    if name in BUILTIN:
        return _import_target(BUILTIN[name]), BUILTIN[name]
    for ep in entry_points(group=GROUP, name=name):
        try:
            return ep.load(), ep.value
        except Exception as e:
            raise RecipeError(
                f"reward '{name}': its entry point '{ep.value}' failed to import: {type(e).__name__}: {e}"
            ) from None
    if ":" in name:
        try:
            return _import_target(name), name
        except (ImportError, AttributeError) as e:
            raise RecipeError(
                f"reward '{name}' could not be imported ({type(e).__name__}: {e}); "
                "check the module is installed and the function name."
            ) from None
    names = sorted(set(BUILTIN) | {ep.name for ep in entry_points(group=GROUP)})
    raise RecipeError(f"reward '{name}' not found; available: {', '.join(names)}; or give 'package.module:function'.")


def load(spec: str | RewardSpec) -> Callable:
    """The reward callable for a built-in name, an entry-point name, or 'module:function'.

    Given a RewardSpec (the loop checks every one before generating): with
    `factory: true` the reward is what the named function returns for the
    spec's kwargs; otherwise each kwarg must be a parameter of the function
    (RecipeError with a did-you-mean), unless it takes **kwargs.
    """
    if not isinstance(spec, RewardSpec):
        return _find(spec)[0]
    fn, target = _find(spec.name)
    if spec.factory:
        fn = build(fn, spec, target)
    check_kwargs(fn, Signature.of(fn), RewardSpec(name=spec.name) if spec.factory else spec, target)
    return fn


def recipe_kwargs(spec: RewardSpec) -> dict:
    """The kwargs a reward is called with: the spec's, except a factory's (they built it)."""
    return {} if spec.factory else dict(spec.kwargs)


def _bad_value(v) -> bool:
    ok = v is None or (
        isinstance(v, (int, float, np.floating, np.integer))
        and not isinstance(v, (bool, np.bool_))
        and math.isfinite(float(v))
    )
    return not ok


def _where(df: pd.DataFrame, i: int) -> str:
    """'sample 17 (prompt_id 5, sample_index 1)': row i of the candidates frame."""
    extra = [f"{c} {df[c].iat[i]}" for c in ("prompt_id", "sample_index") if c in df.columns]
    return f"sample {i}" + (f" ({', '.join(extra)})" if extra else "")


@dataclass
class Logged:
    """What one reward logs through TRL's hooks during one score() call."""

    metrics: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    extras: dict[str, list] = field(default_factory=lambda: defaultdict(list))

    def log_metric(self, name: str, value: float) -> None:
        self.metrics[name].append(float(value))

    def log_extra(self, column: str, values: list) -> None:
        self.extras[column].extend(list(values))

    def hooks(self, state: RoundState | None) -> dict:
        return {"trainer_state": state, "log_extra": self.log_extra, "log_metric": self.log_metric}

    def replay(self, hooks: dict) -> None:
        """Send what was logged (on a Ray worker) to the caller's own hooks."""
        for name, values in self.metrics.items():
            for v in values:
                if hooks.get("log_metric"):
                    hooks["log_metric"](name, v)
        for column, values in self.extras.items():
            if hooks.get("log_extra"):
                hooks["log_extra"](column, values)


def call_chunk(spec: str | RewardSpec, available: dict) -> tuple[list, Logged]:
    """Run a reward on one chunk on a Ray worker (rsft_gen.executor_ray): its own hooks record what it logs,
    and the caller replays them. `available` holds every argument the head offered."""
    fn = load(spec)
    logged = Logged()
    own = {k: v for k, v in available.items() if k not in ("log_extra", "log_metric")}
    values = fn(**arguments(Signature.of(fn), own | {"log_extra": logged.log_extra, "log_metric": logged.log_metric}))
    return list(values), logged


def _first_failing(fn: Callable, args: dict, per_sample: set[str], n: int, limit: int = 200) -> int | None:
    """After a batch call raised: the first sample that raises when scored alone (None if none of the first `limit`)."""
    quiet = {h: (lambda *a: None) for h in ("log_extra", "log_metric") if h in args}  # these calls log nothing
    for i in range(min(limit, n)):
        try:
            fn(**one_sample(args, per_sample, i) | quiet)
        except Exception:
            return i
    return None


def _call(
    spec: RewardSpec, fn: Callable, args: dict, per_sample: set[str], df: pd.DataFrame
) -> tuple[list[float | None], int]:
    """Run one reward over all candidates and apply its on_error policy; returns (values, errors)."""
    n = len(df)
    tolerate = "(set on_error: zero or skip in the recipe to tolerate this)"
    try:
        values = fn(**args)
    except Exception as e:
        if spec.on_error == "raise":
            # The call is batched, so "which sample" means: the first that also raises on its own.
            i = _first_failing(fn, args, per_sample, n)
            where = (
                f"; {_where(df, i)} raises on its own"
                if i is not None
                else "; no single sample among the first 200 raises on its own (the failure needs the batch)"
            )
            raise RewardError(f"reward '{spec.name}' raised {type(e).__name__}: {e}{where} {tolerate}.") from e
        log.warning(
            "reward '%s' raised %s: %s; on_error=%s applies to all %d samples",
            spec.name,
            type(e).__name__,
            e,
            spec.on_error,
            n,
        )
        return [0.0 if spec.on_error == "zero" else None] * n, n
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple)) or len(values) != n:
        got = (
            f"{type(values).__name__} of length {len(values)}"
            if hasattr(values, "__len__")
            else f"a {type(values).__name__}"
        )
        if spec.on_error == "raise":
            raise RewardError(
                f"reward '{spec.name}' returned {got} for {n} completions; it must return a list with one "
                f"float or None per completion {tolerate}."
            )
        log.warning(
            "reward '%s' returned %s for %d completions; on_error=%s applies to all", spec.name, got, n, spec.on_error
        )
        return [0.0 if spec.on_error == "zero" else None] * n, n
    bad = [i for i, v in enumerate(values) if _bad_value(v)]
    if bad and spec.on_error == "raise":
        i = bad[0]
        more = f" (and {len(bad) - 1} more samples)" if len(bad) > 1 else ""
        raise RewardError(
            f"reward '{spec.name}' returned {values[i]!r} for {_where(df, i)}{more}; rewards must be finite "
            f"floats or None {tolerate}."
        )
    fill = 0.0 if spec.on_error == "zero" else None
    bad_set = set(bad)
    return [fill if i in bad_set else (None if v is None else float(v)) for i, v in enumerate(values)], len(bad)


def _record(logged: Logged, col_name: str, df: pd.DataFrame, counts: dict) -> None:
    """A reward's log_metric values into counts, its log_extra columns into the frame, both under its name."""
    for name, values in logged.metrics.items():
        counts[f"{col_name}/{name}"] = float(np.mean(values))
    for column, values in logged.extras.items():
        if len(values) != len(df):
            log.warning(
                "%s: log_extra('%s') got %d values for %d samples; not kept", col_name, column, len(values), len(df)
            )
            continue
        df[f"{col_name}/{column}"] = values


def score(cands: pd.DataFrame, specs: list[RewardSpec], state: RoundState | None = None) -> tuple[pd.DataFrame, dict]:
    """Add `reward/<name>` columns and the weighted `reward`; returns (frame, counts).

    counts has, per reward, `reward/<name>/errors` (samples whose value was bad or
    whose call failed, replaced per on_error), `reward/<name>/none` (no opinion)
    and what it logged with log_metric. A sample none of the rewards has an
    opinion on gets reward NaN. `state` is what rewards naming `trainer_state` get.
    """
    df = cands.copy()
    batch = Batch(cands)
    total = np.zeros(len(df))
    has_opinion = np.zeros(len(df), dtype=bool)
    counts: dict[str, float] = {}
    for spec in specs:
        fn = load(spec)
        sig = Signature.of(fn)
        offered, kwargs, logged = batch.offered(sig), recipe_kwargs(spec), Logged()
        check_call(sig, arguments(sig, offered | kwargs), kwargs, offered, spec.name)
        if getattr(spec, "executor", "local") == "ray":  # chunks scored as Ray tasks, values in the same order
            from rsft_gen.executor_ray import remote_reward

            # Everything goes to the wrapper; each chunk's task picks what the function takes (call_chunk).
            fn, args = remote_reward(fn, spec), offered | kwargs | logged.hooks(state)
        else:
            args = arguments(sig, offered | kwargs | logged.hooks(state))
        col_name = f"reward/{spec.name}"
        k = 2
        while col_name in df.columns:  # the same reward twice (say, with different kwargs)
            col_name, k = f"reward/{spec.name}#{k}", k + 1
        start = time.perf_counter()
        values, errors = _call(spec, fn, args, set(offered), df)
        col = np.array([np.nan if v is None else v for v in values], dtype=float)
        df[col_name] = col
        _record(logged, col_name, df, counts)
        opinion = ~np.isnan(col)
        total += np.where(opinion, spec.weight * np.nan_to_num(col), 0.0)
        has_opinion |= opinion
        counts[f"{col_name}/errors"] = errors
        counts[f"{col_name}/none"] = int((~opinion).sum())
        mean = float(col[opinion].mean()) if opinion.any() else float("nan")
        log.info(
            "%s: %d samples in %.2fs, mean %.3f, %d without opinion, %d errors",
            col_name,
            len(df),
            time.perf_counter() - start,
            mean,
            counts[f"{col_name}/none"],
            errors,
        )
    # No reward had an opinion: NaN, which no acceptance rule accepts.
    df["reward"] = np.where(has_opinion, total, np.nan)
    return df, counts
