"""Prompt sets from reasoning-gym's procedural tasks, each row carrying what its verifier needs.

    data:
      task: reasoning_gym
      tasks:                               # one name, a list of names, or weighted specs
        - {name: chain_sum, weight: 3, config: {min_terms: 2, max_terms: 2, max_digits: 2}}
        - {name: basic_arithmetic, weight: 1}
      prompt_suffix: " Give only the final answer."
      train_prompts: 2000
      eval_prompts: 200

Each row's task is drawn by weight, as reasoning-gym's CompositeDataset does;
each split (held-out, train, seed SFT) draws from its own seed, derived from the
run's seed and the split, and a training or seed row whose question also appears
in the held-out set is dropped, so held-out questions are never trained on.
Columns: `prompt` (question + suffix), `answer` (the task's oracle answer),
`question`, and for the `reasoning_gym` reward `rg_task`, `rg_config` and
`rg_entry` (the entry's question/answer/metadata as JSON), from which the task's
own `score_answer` is rebuilt.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rsft_gen.config import DataConfig, RecipeError

SPLITS = {"eval": 1, "train": 2, "seed_sft": 3}  # each split's stream in the seed sequence


@dataclass
class TaskSpec:
    name: str
    weight: float = 1.0
    config: dict[str, Any] = field(default_factory=dict)


def _registry() -> dict:
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError:
        raise RecipeError(
            "recipe key 'data.task' is reasoning_gym, which needs the package reasoning-gym: "
            "pip install reasoning-gym (or the extra: pip install 'rsft-gen[real]')."
        ) from None
    return DATASETS


def parse_specs(tasks: Any) -> list[TaskSpec]:
    """data.tasks as TaskSpecs; unknown task names and config keys are errors that name them."""
    if isinstance(tasks, (str, dict)):
        tasks = [tasks]
    if not tasks:
        raise RecipeError(
            "recipe key 'data.tasks' is empty; data.task: reasoning_gym needs task names, "
            "e.g. data.tasks=[chain_sum] or [{name: chain_sum, weight: 1, config: {max_digits: 2}}]."
        )
    registry, specs = _registry(), []
    for i, item in enumerate(tasks):
        where = f"data.tasks[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise RecipeError(f"recipe key '{where}' is {item!r}; give a task name or {{name, weight, config}}.")
        unknown = sorted(set(item) - {"name", "weight", "config"})
        if unknown:
            raise RecipeError(f"recipe key '{where}' has unknown keys {unknown}; a task spec has name, weight, config.")
        spec = TaskSpec(str(item["name"]), float(item.get("weight", 1.0)), dict(item.get("config") or {}))
        if spec.name not in registry:
            close = difflib.get_close_matches(spec.name, list(registry), n=4, cutoff=0.5)
            hint = (
                f" Did you mean {', '.join(close)}?"
                if close
                else f" There are {len(registry)} tasks, e.g. {', '.join(sorted(registry)[:6])}."
            )
            raise RecipeError(f"recipe key '{where}.name' is '{spec.name}', which is not a reasoning-gym task.{hint}")
        if spec.weight <= 0:
            raise RecipeError(f"recipe key '{where}.weight' is {spec.weight}; weights must be positive.")
        fields = {f.name for f in dataclasses.fields(registry[spec.name][1])} - {"size", "seed"}
        for key in spec.config:
            if key not in fields:
                close = difflib.get_close_matches(key, sorted(fields), n=1, cutoff=0.5)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise RecipeError(
                    f"recipe key '{where}.config.{key}': task '{spec.name}' has no option '{key}'.{hint} "
                    f"Its options: {', '.join(sorted(fields))}."
                )
        specs.append(spec)
    return specs


def split_seed(seed: int, split: str, task_index: int) -> int:
    """A 32-bit seed per (run seed, split, task); different splits never share one."""
    return int(np.random.SeedSequence([seed, SPLITS[split], task_index]).generate_state(1)[0])


def draw(specs: list[TaskSpec], n: int, seed: int, split: str, exclude: set[str] = frozenset()) -> pd.DataFrame:
    """n rows of the weighted task mix for one split, questions in `exclude` left out."""
    import reasoning_gym

    weights = np.array([s.weight for s in specs]) / sum(s.weight for s in specs)
    counts = np.bincount(
        np.random.default_rng(split_seed(seed, split, len(specs))).choice(len(specs), n, p=weights),
        minlength=len(specs),
    )
    rows = []
    for i, (spec, count) in enumerate(zip(specs, counts)):
        if count == 0:
            continue
        # Draw spares so that rows excluded for appearing in the held-out set can be replaced.
        size = int(count + len(exclude) + 16)
        try:
            ds = reasoning_gym.create_dataset(spec.name, size=size, seed=split_seed(seed, split, i), **spec.config)
        except (ValueError, AssertionError, TypeError) as e:
            raise RecipeError(
                f"recipe key 'data.tasks[{i}].config' for task '{spec.name}' is not accepted: {e}"
            ) from None
        kept = [e for e in ds if e["question"] not in exclude][:count]
        if len(kept) < count:
            raise RecipeError(
                f"data: task '{spec.name}' gave only {len(kept)} questions not in the held-out set for "
                f"the {split} split ({count} wanted); make the task harder or ask for fewer prompts."
            )
        config = json.dumps(spec.config, sort_keys=True)
        rows += [
            {
                "question": e["question"],
                "answer": str(e["answer"]),
                "rg_task": spec.name,
                "rg_config": config,
                "rg_entry": json.dumps({k: e[k] for k in ("question", "answer", "metadata")}, default=str),
            }
            for e in kept
        ]
    order = np.random.default_rng(split_seed(seed, split, len(specs) + 1)).permutation(len(rows))
    df = pd.DataFrame([rows[j] for j in order], columns=["question", "answer", "rg_task", "rg_config", "rg_entry"])
    df.insert(0, "prompt_id", np.arange(len(df)))
    return df


def reasoning_gym_task(cfg: DataConfig, seed_sft_n: int, seed: int):
    """TaskData (train, eval, seed_sft) for data.task: reasoning_gym."""
    from rsft_gen.data import TaskData

    specs = parse_specs(cfg.tasks)
    eval_df = draw(specs, cfg.eval_prompts, seed, "eval")
    held_out = set(eval_df.question)
    train = draw(specs, cfg.train_prompts, seed, "train", exclude=held_out)
    seed_df = draw(specs, seed_sft_n, seed, "seed_sft", exclude=held_out)
    with_prompt = lambda d: d.assign(prompt=d.question + cfg.prompt_suffix)  # noqa: E731
    return TaskData(train=with_prompt(train), eval=with_prompt(eval_df), seed_sft=with_prompt(seed_df))
