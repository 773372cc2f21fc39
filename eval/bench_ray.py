"""Generation phase with generate.executor=ray against local, same run, same machine.

    python eval/bench_ray.py                                        # the default recipe, small sizes (below)
    python eval/bench_ray.py recipes/addition_tiny.yaml data.train_prompts=8000 --repeats 5
    python eval/bench_ray.py recipes/smollm2_X.yaml generate.n=4 --pools 2x1 1x2
    python eval/bench_ray.py RECIPE --address HEAD_IP:6379          # a real cluster instead of a local one

Prepares the run once (round 0: seed SFT if the recipe has one), then times round 1's
whole generate phase as the loop runs it (`loop.generate_shards` and writing
candidates.parquet), alternating local and ray. Each side's first phase starts its
engines (as round 1 of a run does) and is reported apart; the next `--repeats` phases
are medians. Between phases each side frees its engines as before training, and the
phases alternate between two copies of the round's model (hard links), so an engine
that is kept across rounds reloads the weights in place and one that is not starts
again: each phase costs what a later round's does. The Ray cluster and the workers'
start are a cost paid once per run and reported apart. The two sides' candidates
must be identical, row for row, or the benchmark stops.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing  # noqa: E402

from rsft_gen import run_lock, run_setup  # noqa: E402
from rsft_gen.config import load_recipe  # noqa: E402
from rsft_gen.loop import RunContext, generate_shards, run  # noqa: E402
from rsft_gen.state import round_dir, write_parquet  # noqa: E402

SMALL = ["data.train_prompts=4000", "data.eval_prompts=100", "generate.shard_prompts=500"]  # the default's small sizes


def phase(ctx: RunContext) -> tuple[float, pd.DataFrame, int]:
    """Round 1's generate phase as run_round runs it; returns (seconds, candidates, tokens)."""
    shutil.rmtree(round_dir(ctx.run_dir, 1), ignore_errors=True)
    start = time.perf_counter()
    cands, tokens, _ = generate_shards(ctx, 1, ctx.data.train)
    write_parquet(round_dir(ctx.run_dir, 1) / "candidates.parquet", cands)
    return time.perf_counter() - start, cands, tokens


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?", default="recipes/addition_tiny.yaml")
    ap.add_argument("overrides", nargs="*", help="key=value recipe overrides (default recipe: %s)" % " ".join(SMALL))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--pools",
        nargs="+",
        default=["2x1", "1x2"],
        help="ray pools to compare with local, WORKERSxCPUS each (default: 2x1 = one torch thread per "
        "worker, as Ray gives by default; 1x2 = local's thread count, i.e. Ray's own overhead)",
    )
    ap.add_argument("--address", default=None, help="generate.ray_address (default: a local cluster)")
    ap.add_argument("--out", default="runs/bench_ray")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    overrides = (SMALL if args.recipe.endswith("addition_tiny.yaml") else []) + list(args.overrides)
    overrides += [f"output_dir={args.out}", "tracking.wandb.mode=disabled"]

    run(load_recipe(args.recipe, overrides + ["rounds=0"]), allow_changes=True)  # round 0's model (seed SFT if any)
    recipe = load_recipe(args.recipe, overrides + ["rounds=1"])
    ctx = run_setup.prepare(recipe, Path(args.out), allow_changes=True)

    rows = []
    try:
        for pool_spec in args.pools:
            workers, cpus = (float(x) for x in pool_spec.split("x"))
            rows.append(compare(ctx, recipe, int(workers), cpus, args))
    finally:
        ctx.generators.release()
        ctx.tracker.close()
        run_lock.release(Path(args.out))  # taken by run_setup.prepare
    print(
        f"\n{args.recipe} {' '.join(args.overrides)}: {rows[0]['candidates']} candidates, "
        f"{rows[0]['tokens']} new tokens per phase; medians of {args.repeats}, local and ray alternating"
    )
    print(
        "| ray pool | local: s | ray: s | ray / local | local tok/s | ray tok/s | first phase (engines start): "
        "local / ray | cluster + workers start (once per run) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['pool']} | {row['local']:.2f} | {row['ray']:.2f} | {row['ray'] / row['local']:.3f} | "
            f"{row['tokens'] / row['local']:,.0f} | {row['tokens'] / row['ray']:,.0f} | "
            f"{row['local_first']:.1f} / {row['ray_first']:.1f} s | {row['startup']:.1f} s |"
        )


def compare(ctx: RunContext, recipe, workers: int, cpus: float, args) -> dict:
    """Local and one ray pool (workers x cpus), alternating: a first phase each, then --repeats each; medians."""
    from rsft_gen.executor_ray import RayShardPool

    ray_recipe = dataclasses.replace(
        recipe,
        generate=dataclasses.replace(
            recipe.generate, executor="ray", workers=workers, worker_cpus=cpus, ray_address=args.address
        ),
    )
    models = two_copies(ctx.model_of(0), Path(args.out) / "model_copy")
    ctx.generators.close()  # the local side starts its engine in its first phase too
    start = time.perf_counter()
    ctx.pool = RayShardPool(ray_recipe)  # Ray up (or attached) and the workers placed: once per run
    startup = time.perf_counter() - start
    times: dict[str, list[float]] = {"local": [], "ray": []}
    tokens, reference = 0, None
    try:
        for i in range(args.repeats + 1):
            sides = [("local", recipe), ("ray", ray_recipe)]
            for name, rec in sides if i % 2 == 0 else sides[::-1]:
                ctx.recipe = rec
                ctx.model_of = lambda r, m=models[i % 2]: m  # a new round's checkpoint for the kept engines
                seconds, cands, tokens = phase(ctx)
                ctx.generators.release()  # as before training: vLLM sleeps (GPU) or stays (CPU inplace)
                ctx.pool.release()
                reference = cands if reference is None else reference
                pd.testing.assert_frame_equal(cands, reference)  # the same candidates, row for row
                times[name].append(seconds)
                label = "first (engine start)" if i == 0 else f"repeat {i}"
                print(f"{workers}x{cpus:g} {label:20s} {name:5s}: {seconds:7.2f} s  {tokens / seconds:9.0f} tok/s")
    finally:
        ctx.pool.close()
        del ctx.model_of
        ctx.pool, ctx.recipe = None, recipe
    return {
        "pool": f"{workers} workers x {cpus:g} CPU",
        "local_first": times["local"][0],
        "ray_first": times["ray"][0],
        "local": statistics.median(times["local"][1:]),
        "ray": statistics.median(times["ray"][1:]),
        "tokens": tokens,
        "candidates": len(reference),
        "startup": startup,
    }


def two_copies(model_dir: str, copy: Path) -> list[str]:
    """The model and a hard-linked copy at another path: alternating them makes every phase a weight reload."""
    if not Path(model_dir).is_dir():  # a hub id or a file: nothing to copy, engines then keep their weights
        return [model_dir, model_dir]
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(model_dir, copy, copy_function=os.link)
    return [str(Path(model_dir).resolve()), str(copy.resolve())]


if __name__ == "__main__":
    main()
