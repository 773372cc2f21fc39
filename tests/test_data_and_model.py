"""The synthetic addition task and the tiny model load through the standard HF path."""

import numpy as np
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


def test_eval_and_training_prompts_come_from_one_distribution():
    # The default recipe's sizes use most of the 10,000 problems with operands below 100; the
    # held-out set, drawn first, must not take a different mix (e.g. most one-digit problems).
    from scipy.stats import chi2_contingency

    task = make_task(DataConfig(digits=[1, 2], train_prompts=6000, eval_prompts=500), seed_sft_n=3000, seed=0)

    def operand_digit_counts(df):
        ops = df.prompt.str.rstrip("=").str.split("+", expand=True).astype(int)
        one_digit = (ops < 10).sum(axis=1)  # 0, 1 or 2 one-digit operands per problem
        return np.bincount(one_digit, minlength=3)

    table = np.array(
        [operand_digit_counts(task.eval), operand_digit_counts(task.train), operand_digit_counts(task.seed_sft)]
    )
    assert chi2_contingency(table).pvalue > 0.01, table
    # and the mix is uniform over numbers: 10 of the 100 operands have one digit
    share = (table[:, 1] + 2 * table[:, 2]) / (2 * table.sum(axis=1))
    assert np.all(np.abs(share - 0.1) < 0.03), share


def test_tiny_model_round_trips_through_auto_classes(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tok("12+34=")["input_ids"]
    assert len(ids) == 6  # one token per character, no BOS
    assert (
        tok.decode(tok("46", add_special_tokens=False)["input_ids"] + [tok.eos_token_id], skip_special_tokens=True)
        == "46"
    )
    assert model.config.model_type == "llama"
    with torch.no_grad():
        assert model(torch.tensor([ids])).logits.shape == (1, 6, len(tok))
