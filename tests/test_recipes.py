"""The GPU recipes, run here with tiny local stand-ins: each recipe is loaded and
validated as shipped, then run for one round with its model swapped for a tiny
chat model (ChatML template) and its data set for a local file in the same
format (model.path=..., data.path=...). Generation uses the HF backend here
(generate.backend=hf), sizes are tiny, and accept.rule=all so the train phase
runs even though a random model solves nothing; the recipe's reward still
scores every candidate."""

import json
from pathlib import Path

import pandas as pd
import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer

from rsft_gen.config import TinyModelConfig, load_recipe
from rsft_gen.loop import run
from rsft_gen.tiny_model import build_tiny_model

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
RECIPES = sorted(str(p) for p in Path("recipes").glob("*.yaml"))


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    out = build_tiny_model(tmp_path_factory.mktemp("tiny_chat"), TinyModelConfig(max_position_embeddings=512), seed=0)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = CHATML
    tok.save_pretrained(out)
    return str(out)


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def gsm8k_like(tmp: Path) -> list[str]:
    def rows(n):
        return [
            {"question": f"Tom has {i} apples and buys 2. How many?", "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}
            for i in range(n)
        ]

    files = {"train": jsonl(tmp / "train.jsonl", rows(12)), "test": jsonl(tmp / "test.jsonl", rows(4))}
    return ["data.path=json", "data.name=null", f"data.data_files={json.dumps(files)}"]


def math_like(tmp: Path) -> list[str]:
    def rows(n):
        return [
            {
                "problem": f"What is ${i}/2$?",
                "solution": f"It is $\\boxed{{\\frac{{{i}}}{{2}}}}$.",
                "level": "Level 1",
                "type": "Algebra",
            }
            for i in range(1, n + 1)
        ]

    files = {"train": jsonl(tmp / "train.jsonl", rows(12)), "test": jsonl(tmp / "test.jsonl", rows(4))}
    return ["data.path=json", f"data.data_files={json.dumps(files)}"]


def mbpp_like(tmp: Path) -> list[str]:
    def rows(n):
        return [
            {
                "task_id": i,
                "text": f"Write a function f{i} returning {i}.",
                "code": f"def f{i}():\n    return {i}",
                "test_list": [f"assert f{i}() == {i}"],
            }
            for i in range(n)
        ]

    DatasetDict({"train": Dataset.from_list(rows(12)), "test": Dataset.from_list(rows(4))}).save_to_disk(tmp / "mbpp")
    return ["data.task=file", f"data.path={tmp / 'mbpp'}", "data.name=null"]


STAND_INS = {
    "gsm8k_qwen2.5_0.5b": gsm8k_like,
    "math_qwen2.5_1.5b": math_like,
    "mbpp_code_qwen2.5_coder_1.5b": mbpp_like,
}


@pytest.mark.parametrize("recipe_path", RECIPES)
def test_recipe_loads_validates_and_opens_with_its_command(recipe_path):
    recipe = load_recipe(recipe_path)
    first = Path(recipe_path).read_text().splitlines()[:12]
    assert first[0].startswith("#") and any(f"rsft-gen run {recipe_path}" in line for line in first)
    assert recipe.rounds >= 1 and recipe.rewards


@pytest.mark.parametrize("name", sorted(STAND_INS))
def test_recipe_runs_one_round_with_tiny_stand_ins(name, chat_model, tmp_path):
    recipe = load_recipe(
        f"recipes/{name}.yaml",
        STAND_INS[name](tmp_path)
        + [
            f"model.path={chat_model}",
            f"output_dir={tmp_path / 'run'}",
            "rounds=1",
            "generate.backend=hf",
            "generate.n=2",
            "generate.max_new_tokens=16",
            "data.train_prompts=8",
            "data.eval_prompts=4",
            "eval.n=2",
            "eval.k=[1,2]",
            "train.max_length=512",
            "accept.rule=all",
            "tracking.wandb.mode=disabled",
        ],
    )
    run_dir = run(recipe)
    scored = pd.read_parquet(run_dir / "round_01" / "scored.parquet")
    assert len(scored) == 16 and scored.reward.notna().all()  # the recipe's reward scored every candidate
    assert (
        scored.prompt.str.startswith("<|im_start|>system\n").all()
        and scored.prompt.str.endswith("<|im_start|>assistant\n").all()
    )
    if name.startswith("gsm8k"):
        assert scored.answer.str.fullmatch(r"\d+").all()  # data.answer_pattern took the number after '####'
    if name.startswith("mbpp"):
        assert scored.prompt.str.contains("Your code should pass this test:\nassert f").all()  # data.prompt_template
    assert (run_dir / "round_01" / "model" / "config.json").exists()
    assert json.loads((run_dir / "round_01" / "eval.json").read_text())["eval/prompts"] == 4
