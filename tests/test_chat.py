"""Chat models: prompts go through the tokenizer's chat template in one place
(rsft_gen.prompts), so the generator, SFT and eval all see the same text, with
exactly one BOS token."""

import json

import pandas as pd
import pytest
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer

from rsft_gen.config import ModelConfig, RecipeError, load_recipe
from rsft_gen.data import TaskData
from rsft_gen.generate_hf import HFGenerator
from rsft_gen.loop import run
from rsft_gen.prompts import chat_renderer, render_task
from tests.conftest import chat_file_overrides


def task_of(prompts):
    df = pd.DataFrame({"prompt_id": range(len(prompts)), "prompt": prompts, "answer": ["x"] * len(prompts)})
    return TaskData(train=df, eval=df.copy(), seed_sft=df.iloc[:0])


def test_render_with_system_prompt_and_generation_prompt(chat_model_dir):
    task = render_task(task_of(["1+2="]), ModelConfig(chat_template=True, system_prompt="Add."), chat_model_dir)
    # this tokenizer adds no BOS itself, so the template's BOS stays in the text
    assert task.train.prompt[0] == "<s><system>Add.\n<user>1+2=\n<assistant>"
    assert task.eval.prompt[0] == task.train.prompt[0]
    assert render_task(task_of(["1+2="]), ModelConfig(), chat_model_dir).train.prompt[0] == "1+2="


def test_bos_is_not_duplicated_when_tokenizer_adds_it(chat_model_dir):
    tok = AutoTokenizer.from_pretrained(chat_model_dir)
    tok._tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])
    assert tok("1").input_ids[0] == tok.bos_token_id  # this tokenizer now adds BOS, like Llama's
    text = chat_renderer(tok, None)("1+2=")
    assert text == "<user>1+2=\n<assistant>"
    ids = tok(text).input_ids  # what HF generation and TRL's SFT tokenization both do
    assert ids.count(tok.bos_token_id) == 1


def test_generator_sees_rendered_prompt_and_completion_follows_it(chat_model_dir):
    text = chat_renderer(AutoTokenizer.from_pretrained(chat_model_dir), None)("1+2=")
    gen = HFGenerator(chat_model_dir)
    from rsft_gen.generate import SamplingSettings

    cand = gen.generate([0], [text], SamplingSettings(n=1, temperature=0, max_new_tokens=3), progress=False)[0]
    assert "<assistant>" not in cand.completion  # the completion is only what follows the generation prompt


def test_chat_run_end_to_end(chat_model_dir, tmp_path):
    rows = [{"q": f"{a}+{b}=", "a": str(a + b)} for a in range(6) for b in range(6)]
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = load_recipe(
        "recipes/addition_tiny.yaml",
        [
            *chat_file_overrides(chat_model_dir, tmp_path / "run", data),
            "data.eval_prompts=4",
            "seed_sft.n=8",
            "seed_sft.epochs=1",
            "generate.n=2",
            "accept.rule=all",
            "tracking.wandb.mode=disabled",
        ],
    )
    run_dir = run(recipe)
    cands = pd.read_parquet(run_dir / "round_01" / "accepted.parquet")
    assert (
        cands.prompt.str.startswith("<s><system>Add.\n<user>").all() and cands.prompt.str.endswith("<assistant>").all()
    )
    assert (run_dir / "round_01" / "model" / "config.json").exists()


def test_chat_template_missing_is_a_clear_error(tiny_model_dir):
    with pytest.raises(RecipeError, match="has no chat template"):
        render_task(task_of(["1+2="]), ModelConfig(chat_template=True), tiny_model_dir)
    with pytest.raises(RecipeError, match="system_prompt"):
        render_task(task_of(["1+2="]), ModelConfig(system_prompt="hi"), tiny_model_dir)


def test_standalone_eval_renders_like_the_loop(chat_model_dir, tmp_path):
    from rsft_gen.evaluate import evaluate_checkpoint

    rows = [{"q": f"{a}+{b}=", "a": str(a + b)} for a in range(5) for b in range(5)]
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: {{path: {chat_model_dir}, chat_template: true}}\noutput_dir: {tmp_path / 'none'}\n"
        f"data: {{task: file, path: {data}, prompt_field: q, answer_field: a, eval_prompts: 3}}\n"
        "generate: {max_new_tokens: 3}\ntracking: {wandb: {mode: disabled}}\n"
    )
    _, greedy, _ = evaluate_checkpoint(recipe)
    assert greedy.prompt.str.startswith("<s><user>").all()
