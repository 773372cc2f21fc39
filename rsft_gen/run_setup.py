"""Everything a run needs before its first round, as one finished `RunContext`.

    ctx = prepare(recipe, Path(recipe.output_dir))   # None: the run is already complete
    ctx.state.model_of(r, ctx.base_model)            # the checkpoint round r produced (state.py decides)

prepare() takes the run lock, checks a resumed run uses the same recipe, and
builds the prompt sets (chat template applied, if the recipe asks), the starting
model, the device, the tracker and the generator cache.
"""

from __future__ import annotations

import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from rsft_gen import faults, run_lock
from rsft_gen.backends import GeneratorCache, pick_device
from rsft_gen.config import Recipe, RecipeError, to_dict, to_yaml
from rsft_gen.data import TaskData, make_task
from rsft_gen.model_source import resolve_base_model
from rsft_gen.prompts import render_task
from rsft_gen.state import RunState, publish_dir, remove_leftovers, write_parquet, write_text
from rsft_gen.tiny_model import build_tiny_model
from rsft_gen.tracking import Tracker, make_tracker

log = logging.getLogger("rsft_gen")
# Keys that may differ on resume without changing results.
HARMLESS_PREFIXES = (
    "tracking.",
    "rounds",
    "eval.batch_size",
    "generate.batch_size",
    "generate.vllm.",
    "generate.vllm_lifecycle",
    "generate.executor",
    "generate.workers",
    "generate.worker_",
    "generate.ray_address",
)  # where shards run: same samples


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def recipe_differences(old: dict, new: dict) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def saved_recipe(saved: Path) -> dict:
    """A run's config.yaml with keys added to rsft-gen since it was written filled in with their defaults.

    A run started by an older version lacks the newer keys; they are not changes of the recipe when the
    resumed recipe keeps their defaults. (A file that no longer merges, e.g. a removed key, is compared as is.)
    """
    raw = OmegaConf.load(saved)
    try:
        return OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(Recipe), raw), resolve=True)
    except Exception:
        return OmegaConf.to_container(raw, resolve=True)


def check_resume(run_dir: Path, recipe: Recipe, allow_changes: bool) -> None:
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return
    old = saved_recipe(saved)
    diffs = recipe_differences(old, to_dict(recipe))
    harmful = [k for k in diffs if not k.startswith(HARMLESS_PREFIXES)]
    if harmful and not allow_changes:
        listing = ", ".join(f"{k}: {_flatten(old).get(k)!r} -> {_flatten(to_dict(recipe)).get(k)!r}" for k in harmful)
        raise RecipeError(
            f"{run_dir} was started with a different recipe ({listing}); resuming would mix results. "
            f"Use another output_dir, or pass --allow-recipe-change to resume anyway."
        )
    if diffs:
        log.info("resuming %s with changed keys: %s", run_dir, ", ".join(diffs))


def load_or_make_data(recipe: Recipe, run_dir: Path) -> TaskData:
    d = run_dir / "data"
    files = {name: d / f"{name}.parquet" for name in ("train", "eval", "seed_sft")}
    if all(f.exists() for f in files.values()):
        return TaskData(**{name: pd.read_parquet(f) for name, f in files.items()})
    task = make_task(recipe.data, recipe.seed_sft.n, recipe.seed)
    for name, f in files.items():
        write_parquet(f, getattr(task, name))
    return task


def prepare_base_model(recipe: Recipe, run_dir: Path) -> str:
    """The starting model's directory or hub id: 'tiny' is built into the run directory; GGUF files are converted."""
    if recipe.model.path != "tiny":
        return resolve_base_model(recipe.model)
    target = run_dir / "base_model"
    if not (target / "config.json").exists():
        tmp = Path(tempfile.mkdtemp(prefix=".base_model.", dir=run_dir))
        build_tiny_model(tmp, recipe.model.tiny, seed=recipe.seed)
        publish_dir(tmp, target)
    return str(target)


def check_rewards(recipe: Recipe) -> None:
    """Load every reward now, so a misspelt name fails before hours of generation, not after."""
    from rsft_gen.rewards import load

    for spec in recipe.rewards:
        load(spec)


@dataclass
class RunContext:
    """What every phase of a run reads: built once by `prepare`, complete when it returns."""

    recipe: Recipe
    run_dir: Path
    state: RunState
    device: str
    data: TaskData  # prompts rendered as the model sees them (chat template, if the recipe asks)
    base_model: str
    tracker: Tracker
    generators: GeneratorCache
    timings: dict = field(default_factory=dict)
    pool: object = None  # generate.executor: ray: the RayShardPool, started at the first shard

    def model_of(self, r: int) -> str:
        """The checkpoint that round r produced (RunState.model_of: carried, round_NN/model, round 0 = base)."""
        return self.state.model_of(r, self.base_model)

    @contextmanager
    def phase(self, r: int, name: str):
        """Time a phase and mark it complete (with its metrics) only if it finishes."""
        start = time.perf_counter()
        metrics: dict = {}
        yield metrics
        seconds = time.perf_counter() - start
        metrics[f"time/{name}_s"] = seconds
        faults.check(r, name)  # tests: die here, outputs written but the phase not yet marked
        self.state.complete(r, name, metrics)
        log.info("round %d: %s done in %.1fs", r, name, seconds)


def prepare(recipe: Recipe, run_dir: Path, allow_changes: bool = False) -> RunContext | None:
    """Set up (or reopen) the run directory; None when the run is already finished.

    Takes the directory's run lock (rsft_gen/run_lock.py) for the run's lifetime: the loop
    releases it when the run ends; here it is released when setup fails or there is nothing to do."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RecipeError(
            f"output directory '{run_dir}' is not writable ({e.strerror}); set output_dir to a writable path."
        ) from None
    run_lock.acquire(run_dir)
    try:
        ctx = _prepare_locked(recipe, run_dir, allow_changes)
    except (
        OSError
    ) as e:  # an unreadable data file, a full disk while building the base model, ...: one line, not a traceback
        run_lock.release(run_dir)
        where = f" ({e.filename})" if e.filename else ""
        raise RecipeError(
            f"setting up run directory '{run_dir}' failed: {e.strerror or e}{where}. Fix that path (exists, readable, "
            f"writable, space left) and run the same command again; files already written are kept."
        ) from e
    except BaseException:
        run_lock.release(run_dir)
        raise
    if ctx is None:
        run_lock.release(run_dir)
    return ctx


def _prepare_locked(recipe: Recipe, run_dir: Path, allow_changes: bool) -> RunContext | None:
    if removed := remove_leftovers(run_dir):  # we hold the lock: these belong to a writer that was killed
        log.info("%s: removed %d temporary files/directories left by an interrupted run", run_dir, removed)
    check_resume(run_dir, recipe, allow_changes)
    check_rewards(recipe)
    state = RunState(run_dir)
    state.forget_missing_checkpoints()
    if state.get("finished") and state.get("rounds_done", -1) >= recipe.rounds:
        print(
            f"{run_dir}: all {recipe.rounds} rounds are already complete; nothing to do. "
            f"(metrics: {run_dir / 'metrics.jsonl'})"
        )
        return None
    if state.get("finished"):
        state.set("finished", False)  # more rounds asked for than before: extend the run
    write_text(run_dir / "config.yaml", to_yaml(recipe))
    device = pick_device(recipe.device)
    log.info("run directory %s, device %s", run_dir, device)
    data = load_or_make_data(recipe, run_dir)  # before the base model: a bad data key fails before anything is built
    base_model = prepare_base_model(recipe, run_dir)
    return RunContext(
        recipe=recipe,
        run_dir=run_dir,
        state=state,
        device=device,
        data=render_task(data, recipe.model, base_model),  # chat template, if the recipe asks
        base_model=base_model,
        tracker=make_tracker(recipe, run_dir, state),
        generators=GeneratorCache(recipe, device),
    )


def print_round_summary(records: list[dict]) -> None:
    """The one-screen summary after each round: the table `rsft-gen report` prints (pass@k, maj@k, reward, ...)."""
    from rsft_gen.report import console, rich_table

    console(stderr=True).print(rich_table(records))
