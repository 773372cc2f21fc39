"""Selection: from the accepted candidates to the round's SFT set.

    from rsft_gen.select import select
    sft, metrics = select(decided, recipe.select, seed_data, seed=0)

In order: optional difficulty filter (drop prompts whose candidates are all
correct or all wrong, by eval.correct; without a rule given, by `accepted`),
dedup of identical (prompt, key) pairs (key "answer": eval.answer), a
per-prompt cap (ReST-EM keeps at most 10 per problem), then optional mixing of
the labelled seed data. The result has `prompt`, `completion`, `prompt_id`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rsft_gen.answers import AnswerRule, CorrectRule
from rsft_gen.config import SelectConfig


def _dedup_key(df: pd.DataFrame, key: str, answer: AnswerRule | None) -> pd.Series:
    if key == "answer":  # dedup on the extracted answer, e.g. keep one solution per final answer
        if answer is None:
            raise ValueError(
                "select.dedup_key is 'answer' but the recipe defines no answer; "
                "set eval.answer.extract (e.g. last_number)."
            )
        return df["completion"].map(lambda c: answer.of(c) or c.strip())  # no answer: the text itself
    if key not in df.columns:
        raise ValueError(
            f"recipe key 'select.dedup_key' is '{key}', which is not a candidate column; "
            f"use 'completion', 'answer' or one of {list(df.columns)}"
        )
    return df[key].astype(str)


def select(
    decided: pd.DataFrame,
    cfg: SelectConfig,
    seed_data: pd.DataFrame | None,
    seed: int,
    correct: CorrectRule | None = None,
    answer: AnswerRule | None = None,
) -> tuple[pd.DataFrame, dict]:
    """`correct` / `answer`: the recipe's eval.correct and eval.answer (rsft_gen.answers); the loop passes both."""
    df = decided
    metrics: dict[str, float] = {}
    if cfg.difficulty_filter:
        ok = correct.mask(df) if correct is not None else df["accepted"].to_numpy(dtype=bool)
        passed = df.assign(_ok=ok).groupby("prompt_id")["_ok"].agg(["sum", "size"])
        informative = passed.index[(passed["sum"] > 0) & (passed["sum"] < passed["size"])]
        metrics["select/dropped_prompts_all_or_none"] = int(len(passed) - len(informative))
        df = df[df["prompt_id"].isin(informative)]
    acc = df[df["accepted"]].copy()
    n_accepted = len(acc)
    if cfg.dedup:
        acc["_key"] = _dedup_key(acc, cfg.dedup_key, answer).to_numpy()
        acc = acc.drop_duplicates(["prompt_id", "_key"]).drop(columns="_key")
    metrics["select/duplicates_removed"] = n_accepted - len(acc)
    if cfg.max_per_prompt is not None:
        before = len(acc)
        acc = acc.groupby("prompt_id", sort=False).head(cfg.max_per_prompt)
        metrics["select/capped"] = before - len(acc)
    sft = acc[["prompt_id", "prompt", "completion"]].assign(source="generated")
    if cfg.mix_seed_fraction > 0 and seed_data is not None and len(seed_data) and len(sft):
        # Fraction of the final set that is seed data: n_seed / (n_seed + n_gen) = f.
        want = (
            int(round(len(sft) * cfg.mix_seed_fraction / (1 - cfg.mix_seed_fraction)))
            if cfg.mix_seed_fraction < 1
            else len(seed_data)
        )
        rng = np.random.default_rng(seed)
        take = rng.choice(len(seed_data), size=min(want, len(seed_data)), replace=False)
        mixed = seed_data.iloc[np.sort(take)].rename(columns={"answer": "completion"})[
            ["prompt_id", "prompt", "completion"]
        ]
        sft = pd.concat([sft, mixed.assign(prompt_id=-1 - mixed["prompt_id"], source="seed")], ignore_index=True)
        metrics["select/seed_mixed"] = len(mixed)
    per_prompt = acc.groupby("prompt_id").size().reindex(decided["prompt_id"].unique(), fill_value=0)
    metrics.update(
        {
            "select/sft_examples": len(sft),
            "select/per_prompt_min": int(per_prompt.min()) if len(per_prompt) else 0,
            "select/per_prompt_mean": float(per_prompt.mean()) if len(per_prompt) else 0.0,
            "select/per_prompt_max": int(per_prompt.max()) if len(per_prompt) else 0,
        }
    )
    return sft.reset_index(drop=True), metrics
