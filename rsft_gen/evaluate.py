"""Evaluation of a round's model on the held-out prompts.

    from rsft_gen.evaluate import evaluate
    metrics = evaluate(generator, eval_prompts, recipe, seed=0)
    metrics, greedy, where = evaluate_checkpoint("runs/addition_tiny", round_idx=2)  # `rsft-gen eval`

Greedy accuracy (pass@1 at temperature 0) always; with eval.n > 1 samples per
prompt, also pass@k and maj@k (see rsft_gen.metrics). A sample is correct by
eval.correct (default: the first reward >= 1.0) and maj@k votes on eval.answer
(not reported without one); both are defined in rsft_gen/answers.py.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from rsft_gen.answers import answer_rule, correct_rule
from rsft_gen.config import Recipe
from rsft_gen.generate import Generator, SamplingSettings, candidates_frame
from rsft_gen.reward_call import RoundState


def correctness(cands: pd.DataFrame, recipe: Recipe, round_idx: int = 0) -> np.ndarray:
    """eval.correct for each candidate (scored by the one reward that decides)."""
    return correct_rule(recipe).judge(cands, RoundState(round_idx, recipe.rounds, "eval"))


def evaluate(
    generator: Generator, prompts: pd.DataFrame, recipe: Recipe, seed: int, round_idx: int = 0
) -> tuple[dict, pd.DataFrame]:
    """Returns (metrics, the greedy completions with a `correct` column)."""
    g = recipe.generate
    greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=g.max_new_tokens, seed=seed)
    cands = candidates_frame(generator.generate(prompts.prompt_id.tolist(), prompts.prompt.tolist(), greedy), prompts)
    cands["correct"] = correctness(cands, recipe, round_idx)
    metrics = {"eval/accuracy": float(cands["correct"].mean()), "eval/prompts": len(prompts)}
    if recipe.eval.n > 1:
        from rsft_gen.metrics import sampled_metrics

        sampling = SamplingSettings(
            n=recipe.eval.n,
            temperature=recipe.eval.temperature,
            top_p=g.top_p,
            top_k=g.top_k,
            max_new_tokens=g.max_new_tokens,
            seed=seed,
            log_q=False,  # pass@k and maj@k do not use it
        )
        samples = candidates_frame(
            generator.generate(prompts.prompt_id.tolist(), prompts.prompt.tolist(), sampling), prompts
        )
        samples["correct"] = correctness(samples, recipe, round_idx)
        answer = answer_rule(recipe)
        metrics.update(
            sampled_metrics(
                samples, recipe.eval.k, seed=seed, extract=answer and answer.extract, pattern=answer and answer.pattern
            )
        )
    return metrics, cands


def evaluate_checkpoint(
    target: str | Path, round_idx: int | None = None, overrides: list[str] = ()
) -> tuple[dict, pd.DataFrame, dict]:
    """`rsft-gen eval`: evaluate a run's round (or a recipe's starting model) with `evaluate`.

    target is a run directory (its config.yaml, data/eval.parquet and
    round_NN/model) or a recipe file (whose output_dir is used if that run
    exists; otherwise its starting model, before any seed SFT, on the eval
    prompts a run would draw). round_idx None: the latest trained round.
    Returns (metrics, greedy completions, {"model", "round", "run_dir"}).
    """
    from rsft_gen import run_setup
    from rsft_gen.backends import eval_backend, make_generator, pick_device
    from rsft_gen.config import RecipeError, load_recipe
    from rsft_gen.data import make_task
    from rsft_gen.prompts import render_frame
    from rsft_gen.seeds import derive

    target = Path(target)
    run_dir = target if target.is_dir() else None
    if run_dir is None:
        recipe = load_recipe(target, list(overrides))
        if (Path(recipe.output_dir) / "config.yaml").exists():
            run_dir = Path(recipe.output_dir)
    with tempfile.TemporaryDirectory(prefix="rsft_eval_") as tmp:
        if run_dir is not None:
            if not (run_dir / "config.yaml").exists():
                raise RecipeError(
                    f"'{run_dir}' has no config.yaml; give a run directory written by `rsft-gen run`, or a recipe file."
                )
            recipe = load_recipe(run_dir / "config.yaml", list(overrides))
            prompts = pd.read_parquet(run_dir / "data" / "eval.parquet")
            model, round_idx = round_model(run_dir, recipe, round_idx)
        else:
            if round_idx not in (None, 0):
                raise RecipeError(
                    f"no run at '{recipe.output_dir}' (the recipe's output_dir), so no round {round_idx} to evaluate; "
                    "run it first, or give the run directory."
                )
            round_idx = 0
            prompts = make_task(recipe.data, recipe.seed_sft.n, recipe.seed).eval
            model = run_setup.prepare_base_model(recipe, Path(tmp))  # "tiny" is built with the run's seed
        prompts = render_frame(prompts, recipe.model, str(model))  # the chat template, as the loop applies it
        generator = make_generator(recipe.generate, model, pick_device(recipe.device), backend=eval_backend(recipe))
        try:  # the loop's eval seed, so a round's eval.json is reproduced
            metrics, greedy = evaluate(
                generator, prompts, recipe, seed=derive(recipe.seed, "eval"), round_idx=round_idx
            )
        finally:
            generator.close()
    return metrics, greedy, {"model": str(model), "round": round_idx, "run_dir": str(run_dir) if run_dir else None}


def round_model(run_dir: Path, recipe: Recipe, r: int | None) -> tuple[str, int]:
    """Round r's checkpoint by the loop's rule (RunState.model_of); r None: the latest trained round."""
    from rsft_gen import run_setup
    from rsft_gen.config import RecipeError
    from rsft_gen.state import MissingCheckpointError, RunState

    state = RunState(run_dir)
    r = max(state.trained_rounds() + [0]) if r is None else r
    try:
        return state.model_of(r, lambda: run_setup.prepare_base_model(recipe, run_dir)), r
    except MissingCheckpointError as e:
        raise RecipeError(str(e)) from None
