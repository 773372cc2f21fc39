"""The synthetic addition task and the tiny model load through the standard HF path."""

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rsft_gen.config import DataConfig
from rsft_gen.data import addition_problems, make_task


def test_addition_problems_are_correct_distinct_and_seeded():
    df = addition_problems(200, digits=[1, 2], seed=3)
    assert df.prompt.is_unique and len(df) == 200
    for p, a in zip(df.prompt, df.answer):
        x, y = p.rstrip("=").split("+")
        assert int(x) + int(y) == int(a) and 0 <= int(x) < 100
    pd.testing.assert_frame_equal(df, addition_problems(200, digits=[1, 2], seed=3))


def test_eval_prompts_are_held_out_from_training_and_seed_data():
    task = make_task(DataConfig(train_prompts=500, eval_prompts=200), seed_sft_n=300, seed=0)
    held_out = set(task.eval.prompt)
    assert not held_out & set(task.train.prompt)
    assert not held_out & set(task.seed_sft.prompt)


def test_tiny_model_round_trips_through_auto_classes(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tok("12+34=")["input_ids"]
    assert len(ids) == 6  # one token per character, no BOS
    assert tok.decode(tok("46", add_special_tokens=False)["input_ids"] + [tok.eos_token_id], skip_special_tokens=True) == "46"
    assert model.config.model_type == "llama"
    with torch.no_grad():
        assert model(torch.tensor([ids])).logits.shape == (1, 6, len(tok))
