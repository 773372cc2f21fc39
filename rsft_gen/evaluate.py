"""Evaluation of a round's model on the held-out prompts.

    from rsft_gen.evaluate import evaluate
    metrics = evaluate(generator, eval_prompts, recipe, seed=0)

Greedy accuracy (pass@1 at temperature 0) always; with eval.n > 1 samples per
prompt, also pass@k and maj@k (see rsft_gen.metrics). A prompt counts as
solved when the recipe's first reward gives it at least 1.0 (exact_match: the
answer is right).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rsft_gen.config import Recipe
from rsft_gen.generate import Generator, SamplingSettings, candidates_frame
from rsft_gen.rewards import score


def correctness(cands: pd.DataFrame, recipe: Recipe) -> np.ndarray:
    scored, _ = score(cands, recipe.rewards[:1])
    return np.nan_to_num(scored["reward"].to_numpy(dtype=float), nan=0.0) >= 1.0


def evaluate(generator: Generator, prompts: pd.DataFrame, recipe: Recipe, seed: int) -> tuple[dict, pd.DataFrame]:
    """Returns (metrics, the greedy completions with a `correct` column)."""
    g = recipe.generate
    greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=g.max_new_tokens, seed=seed)
    cands = candidates_frame(generator.generate(prompts.prompt_id.tolist(), prompts.prompt.tolist(), greedy), prompts)
    cands["correct"] = correctness(cands, recipe)
    metrics = {"eval/accuracy": float(cands["correct"].mean()), "eval/prompts": len(prompts)}
    if recipe.eval.n > 1:
        from rsft_gen.metrics import answer_extraction, sampled_metrics

        sampling = SamplingSettings(
            n=recipe.eval.n, temperature=recipe.eval.temperature, top_p=g.top_p, top_k=g.top_k, max_new_tokens=g.max_new_tokens, seed=seed
        )
        samples = candidates_frame(generator.generate(prompts.prompt_id.tolist(), prompts.prompt.tolist(), sampling), prompts)
        samples["correct"] = correctness(samples, recipe)
        metrics.update(sampled_metrics(samples, recipe.eval.k, seed=seed, **answer_extraction(recipe)))
    return metrics, cands
