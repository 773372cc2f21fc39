"""Generation shards: the unit of work of the generate phase, wherever it runs.

    jobs = plan_shards(recipe, r, prompts, shard_dir)          # one ShardJob per generate.shard_prompts prompts
    todo = [job for job in jobs if not job.on_disk()]          # a resumed round keeps what it already has
    if shard_executor(recipe) == "local":
        stats = run_local(todo, lambda: generators.get(model_dir, prompts=prompts))
    else:
        stats = RayShardPool(recipe).run(todo, model_dir)
    cands = read_shards(jobs, prompts)

A shard is seeded by (seed, round, shard index) alone (`shard_seed`, the one place
generation seeds come from: rsft_gen/seeds.py) and written atomically to
round_XX/candidates/shard_NNNNN.parquet, so its rows do not depend on which
process, machine or attempt computed it: the local loop and every executor
(rsft_gen/executor_ray.py) produce the same candidates.parquet, row for row.

The backend decides two things here, and only here: `dataset` (reference completions,
log q = -log N uniform over the whole prompt set) is one shard of the whole set, and
it runs in this process whatever generate.executor says (there is nothing to sample).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from rsft_gen import faults, seeds
from rsft_gen.config import Recipe, records_log_q
from rsft_gen.generate import Generator, SamplingSettings, candidates_frame
from rsft_gen.state import write_parquet


@dataclass
class ShardJob:
    round: int
    index: int
    prompts: pd.DataFrame  # this shard's rows of the prompt set (all columns: rewards need them)
    path: Path  # absolute, so a worker with another working directory writes the same file
    settings: SamplingSettings

    def on_disk(self) -> bool:
        """Already written by an earlier attempt (and for these prompts: a changed shard size redoes it)?"""
        return self.path.exists() and set(pd.read_parquet(self.path, columns=["prompt_id"]).prompt_id) == set(
            self.prompts.prompt_id
        )


@dataclass
class ShardStats:
    tokens: int = 0  # new tokens sampled now (shards already on disk excluded)
    seconds: float = 0.0  # time spent sampling them (local: summed per shard; ray: wall time of the pool)
    lost: int = 0  # shards whose worker died under them and that were run again
    on_head: int = 0  # shards the head ran itself because no worker was left
    by_worker: dict[int, int] = field(default_factory=dict)  # ray: worker slot -> shards it wrote


def shard_seed(recipe: Recipe, r: int, i: int) -> int:
    return seeds.derive(recipe.seed, "generate", round=r, shard=i)


def shard_size(recipe: Recipe, prompts: pd.DataFrame) -> int:
    """generate.shard_prompts; the dataset backend: the whole prompt set (its log q is uniform over all of it)."""
    return len(prompts) if recipe.generate.backend == "dataset" else recipe.generate.shard_prompts


def shard_executor(recipe: Recipe) -> str:
    """Where the shards run: generate.executor, except the dataset backend's, which samples nothing (local)."""
    return "local" if recipe.generate.backend == "dataset" else recipe.generate.executor


def plan_shards(recipe: Recipe, r: int, prompts: pd.DataFrame, shard_dir: Path) -> list[ShardJob]:
    """Every shard of round r, `shard_size` prompts each, in prompt order."""
    size = max(shard_size(recipe, prompts), 1)
    log_q = records_log_q(recipe)
    return [
        ShardJob(
            r,
            i,
            prompts.iloc[begin : begin + size],
            Path(shard_dir).resolve() / f"shard_{i:05d}.parquet",
            SamplingSettings.from_config(recipe.generate, seed=shard_seed(recipe, r, i), log_q=log_q),
        )
        for i, begin in enumerate(range(0, len(prompts), size))
    ]


def run_shard(gen: Generator, job: ShardJob, progress: bool = True) -> tuple[int, float]:
    """Sample one shard and write it atomically; returns (new tokens, seconds sampling)."""
    start = time.perf_counter()
    cands = gen.generate(job.prompts.prompt_id.tolist(), job.prompts.prompt.tolist(), job.settings, progress=progress)
    part = candidates_frame(cands, job.prompts)
    seconds = time.perf_counter() - start
    write_parquet(job.path, part)
    return int(part.num_tokens.sum()), seconds


def run_local(jobs: list[ShardJob], get_generator: Callable[[], Generator]) -> ShardStats:
    """The shards in this process, one after another (the generator is built only if there is work)."""
    stats, gen = ShardStats(), None
    for job in jobs:
        gen = gen or get_generator()
        tokens, seconds = run_shard(gen, job)
        stats.tokens, stats.seconds = stats.tokens + tokens, stats.seconds + seconds
        faults.check(job.round, "generate", shard=job.index)  # tests: die with this shard written
    return stats


def read_shards(jobs: list[ShardJob], prompts: pd.DataFrame) -> pd.DataFrame:
    """All shards, in shard order: the round's candidates."""
    parts = [pd.read_parquet(job.path) for job in jobs]
    return pd.concat(parts, ignore_index=True) if parts else candidates_frame([], prompts)
