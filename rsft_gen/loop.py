"""The self-training loop. Read `run_round` first: it is the whole round, in order.

    from rsft_gen.config import load_recipe
    from rsft_gen.loop import run
    run(load_recipe("recipes/addition_tiny.yaml", ["rounds=2"]))

Round 0 is the starting model (optionally seed-SFT'd on labelled data); round r
samples from round r-1's model, scores, accepts, selects, trains, evaluates.
Each phase writes its own file atomically and is recorded in state.json, so
re-running the same command continues after the last completed phase. Every
random choice is seeded by rsft_gen/seeds.py.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd

from rsft_gen import run_lock, run_setup
from rsft_gen.accept import decide, sampler_truncation, selection_exactness
from rsft_gen.accept_rules import get_rule
from rsft_gen.answers import answer_rule, correct_rule
from rsft_gen.backends import eval_backend
from rsft_gen.config import Recipe, RecipeError, RewardSpec, TrainConfig
from rsft_gen.evaluate import evaluate
from rsft_gen.reward_call import RoundState
from rsft_gen.rewards import load as load_reward
from rsft_gen.rewards import score
from rsft_gen.run_setup import RunContext
from rsft_gen.seeds import derive
from rsft_gen.select import select
from rsft_gen.shards import plan_shards, read_shards, run_local, shard_executor
from rsft_gen.state import round_dir, write_json, write_parquet
from rsft_gen.train import train_sft
from rsft_gen.train_launch import launch_train

log = logging.getLogger("rsft_gen")


class EmptyRoundError(RuntimeError):
    """A round accepted nothing and the recipe says accept.on_empty: stop."""


def run_round(ctx: RunContext, r: int) -> dict:
    """One round: generate -> reward -> accept -> select -> train -> eval."""
    recipe, rd, state, seed = ctx.recipe, round_dir(ctx.run_dir, r), ctx.state, ctx.recipe.seed
    prompts = ctx.data.train
    if not state.done(r, "generate"):
        with ctx.phase(r, "generate") as m:
            cands, new_tokens, seconds = generate_shards(ctx, r, prompts)
            m["generate/tokens_per_s"] = new_tokens / seconds if seconds > 0 else 0.0
            write_parquet(rd / "candidates.parquet", cands)
            m["generate/samples"] = len(cands)
            m["generate/tokens"] = int(cands.num_tokens.sum())
    shutil.rmtree(rd / "candidates", ignore_errors=True)  # the shards, now in candidates.parquet

    if not state.done(r, "reward"):
        with ctx.phase(r, "reward") as m:
            scored, counts = score(
                pd.read_parquet(rd / "candidates.parquet"),
                with_model_path(recipe.rewards, ctx.model_of(r - 1)),
                RoundState(r, recipe.rounds, "reward"),
            )  # counts: errors, no-opinion, what rewards logged
            write_parquet(rd / "scored.parquet", scored)
            m.update(counts)
            m["reward/mean"] = float(scored.reward.mean())

    if not state.done(r, "accept"):  # scored.parquet + accept_prob, accepted -> decided.parquet
        with ctx.phase(r, "accept") as m:
            if get_rule(recipe.accept.rule).needs_engine_memory(recipe.accept):
                ctx.generators.release()  # e.g. a target model needs the memory an engine may hold
            decided, accept_metrics = decide(
                pd.read_parquet(rd / "scored.parquet"),
                recipe.accept,
                seed=derive(seed, "accept", r),
                device=ctx.device,
                truncation=sampler_truncation(recipe.generate),
            )
            write_parquet(rd / "decided.parquet", decided)
            m.update(accept_metrics)
            m["reward/accepted_mean"] = (
                float(decided.reward[decided.accepted].mean()) if decided.accepted.any() else float("nan")
            )

    if not state.done(r, "select"):  # the accepted rows -> the round's SFT set, accepted.parquet
        with ctx.phase(r, "select") as m:
            decided = pd.read_parquet(rd / "decided.parquet")
            sft, select_metrics = select(
                decided,
                recipe.select,
                ctx.data.seed_sft,
                seed=derive(seed, "select", r),
                correct=correct_rule(recipe),
                answer=answer_rule(recipe),
            )
            write_parquet(rd / "accepted.parquet", sft)
            # select/exact: does the SFT set keep the accepted column's exactness (accept/exact, in accept's metrics)?
            m.update(select_metrics | selection_exactness(recipe.select, state.round_metrics(r)))
            ctx.tracker.log_samples(r, decided)  # the samples table and the accepted.parquet artifact, once each

    if not state.done(r, "train"):
        with ctx.phase(r, "train") as m:
            sft = pd.read_parquet(rd / "accepted.parquet")
            start_from = ctx.base_model if recipe.train.init == "base" else ctx.model_of(r - 1)
            if len(sft) == 0:
                handle_empty_round(ctx, r)
            else:
                ctx.generators.release()  # the engine must not hold memory the trainer needs
                m.update(train(ctx, start_from, sft, rd / "model", recipe.train, seed=derive(seed, "train", r)))

    if not state.done(r, "eval"):
        with ctx.phase(r, "eval") as m:
            m.update(evaluate_round(ctx, r))

    return finish_round(ctx, r)


def generate_shards(ctx: RunContext, r: int, prompts: pd.DataFrame) -> tuple[pd.DataFrame, int, float]:
    """Sample generate.n candidates per prompt, generate.shard_prompts prompts at a time.

    Each shard is written atomically to round_XX/candidates/shard_NNNNN.parquet and
    seeded by (seed, round, shard index) alone, so after a crash the shards already
    on disk are kept, only the others are sampled, and the result is exactly what an
    uninterrupted run gives, in this process or on a Ray cluster (generate.executor).
    Returns (all candidates, tokens sampled now, seconds).
    """
    recipe, shard_dir, model = ctx.recipe, round_dir(ctx.run_dir, r) / "candidates", ctx.model_of(r - 1)
    jobs = plan_shards(recipe, r, prompts, shard_dir)  # the backend's shard size (shards.py)
    todo = [job for job in jobs if not job.on_disk()]
    if shard_executor(recipe) == "ray" and todo:
        from rsft_gen.executor_ray import RayShardPool

        ctx.pool = ctx.pool or RayShardPool(recipe)  # kept for the run: its actors keep their engines between rounds
        stats = ctx.pool.run(todo, model)
        ctx.pool.release()  # like the local engine before training: free the workers' memory
    else:
        stats = run_local(todo, lambda: ctx.generators.get(model, prompts=prompts))
    return read_shards(jobs, prompts), stats.tokens, stats.seconds


def train(ctx: RunContext, start_from: str, sft: pd.DataFrame, out: Path, cfg: TrainConfig, seed: int) -> dict:
    """SFT in this process, or in train.num_processes processes under `accelerate launch` (train_launch.py)."""
    if cfg.num_processes > 1:
        address = ctx.recipe.generate.ray_address  # train.num_machines > 1: the generation cluster's nodes
        return launch_train(start_from, sft, out, cfg, ctx.device, seed, ctx.tracker.report_to, address)
    return train_sft(start_from, sft, out, cfg, ctx.device, seed, ctx.tracker.report_to)


def with_model_path(specs: list[RewardSpec], model_path: str) -> list[RewardSpec]:
    """Rewards with a `model_path` parameter (e.g. model_loss) get the current model's path."""
    out = []
    for spec in specs:
        try:
            params = inspect.signature(load_reward(spec)).parameters
        except (TypeError, ValueError):  # a callable without a signature: give it nothing extra
            params = {}
        wants = "model_path" in params and "model_path" not in spec.kwargs and not spec.factory
        out.append(replace(spec, kwargs={**spec.kwargs, "model_path": model_path}) if wants else spec)
    return out


def handle_empty_round(ctx: RunContext, r: int) -> None:
    msg = f"round {r} accepted no samples (see {round_dir(ctx.run_dir, r) / 'scored.parquet'})"
    if ctx.recipe.accept.on_empty == "stop":
        raise EmptyRoundError(
            f"{msg}; stopping as accept.on_empty=stop. Lower accept.threshold, raise generate.n, or set "
            f"accept.on_empty=carry to keep the previous model."
        )
    log.warning("%s; carrying round %d's model forward (accept.on_empty=carry)", msg, r - 1)
    ctx.state.carry(r, ctx.model_of(r - 1))


def evaluate_round(ctx: RunContext, r: int) -> dict:
    gen = ctx.generators.get(ctx.model_of(r), backend=eval_backend(ctx.recipe))
    metrics, greedy = evaluate(gen, ctx.data.eval, ctx.recipe, seed=derive(ctx.recipe.seed, "eval"), round_idx=r)
    write_parquet(round_dir(ctx.run_dir, r) / "eval_samples.parquet", greedy)
    write_json(round_dir(ctx.run_dir, r) / "eval.json", metrics)
    return metrics


def finish_round(ctx: RunContext, r: int) -> dict:
    """Write the round's metrics.jsonl line once, and log it."""
    record = ctx.state.round_record(r)
    if r not in ctx.state.logged_rounds():
        ctx.tracker.log_round(r, record)
        ctx.state.mark_logged(r)
    return record


def run_round_zero(ctx: RunContext) -> dict:
    """The starting model: an optional seed SFT on labelled data, then its eval."""
    recipe, state = ctx.recipe, ctx.state
    if recipe.seed_sft.n > 0 and not state.done(0, "train"):
        with ctx.phase(0, "train") as m:
            labelled = ctx.data.seed_sft.rename(columns={"answer": "completion"})
            train_cfg = replace(recipe.train, epochs=recipe.seed_sft.epochs)
            out = round_dir(ctx.run_dir, 0) / "model"
            m.update(train(ctx, ctx.base_model, labelled, out, train_cfg, seed=derive(recipe.seed, "seed_sft")))
    if not state.done(0, "eval"):
        with ctx.phase(0, "eval") as m:
            m.update(evaluate_round(ctx, 0))
    return finish_round(ctx, 0)


def disk_error(e: BaseException) -> str | None:
    """'No space left on device' and the like (also from safetensors, which raises its own type), else None."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES):
        return f"{os.strerror(e.errno)}" + (f" ({e.filename})" if e.filename else "")
    for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        if f"os error {code})" in str(e):
            return os.strerror(code)
    return None


def run(recipe: Recipe, allow_changes: bool = False) -> Path:
    """Run (or resume) every round of a recipe; returns the run directory."""
    run_dir = Path(recipe.output_dir)
    ctx = run_setup.prepare(recipe, run_dir, allow_changes=allow_changes)
    if ctx is None:
        return run_dir  # already finished; prepare() said so
    try:
        records = [run_round_zero(ctx)]
        for r in range(1, recipe.rounds + 1):
            records.append(run_round(ctx, r))
            run_setup.print_round_summary(records)
        ctx.state.set("rounds_done", recipe.rounds)
        ctx.state.set("finished", True)
        log.info("run finished: %s", run_dir)
    except Exception as e:
        if (reason := disk_error(e)) is None:
            raise
        raise RecipeError(
            f"writing to output directory '{run_dir}' failed: {reason}. Every file is written atomically, so "
            f"{run_dir / 'state.json'} and the completed phases are intact; free space (or fix permissions) and "
            f"run the same command again to resume."
        ) from e
    finally:
        ctx.generators.close()
        if ctx.pool is not None:
            ctx.pool.close()
        ctx.tracker.close()
        run_lock.release(run_dir)  # taken by run_setup.prepare
    return run_dir
