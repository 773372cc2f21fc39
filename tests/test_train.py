"""Training with the real TRL SFTTrainer: device-appropriate precision, completion-only loss."""

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rsft_gen.config import TrainConfig
from rsft_gen.likelihood import completion_log_probs
from rsft_gen.train import precision_flags, train_sft


def test_cpu_trains_in_fp32_without_checkpointing():
    assert precision_flags(TrainConfig(), "cpu") == {"bf16": False, "fp16": False, "gradient_checkpointing": False}
    assert precision_flags(TrainConfig(precision="bf16", gradient_checkpointing=True), "cpu")["bf16"] is True


def test_sft_learns_the_completions_and_publishes_a_loadable_checkpoint(tiny_model_dir, tmp_path):
    sft = pd.DataFrame({"prompt": ["1+1=", "2+2=", "3+3="] * 8, "completion": ["2", "4", "6"] * 8})
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    out = tmp_path / "round_01" / "model"
    metrics = train_sft(
        tiny_model_dir,
        sft,
        out,
        TrainConfig(epochs=15, batch_size=8, learning_rate=3e-3, logging_steps=1000),
        "cpu",
        seed=0,
    )
    assert (out / "config.json").exists() and (out / "tokenizer_config.json").exists()
    assert [p.name for p in out.parent.iterdir()] == ["model"]  # no temporary directories left
    after = AutoModelForCausalLM.from_pretrained(out)
    assert next(after.parameters()).dtype == torch.float32
    prompts, completions = ["1+1=", "2+2=", "3+3="], ["2", "4", "6"]
    lp_before = completion_log_probs(before, tok, prompts, completions, add_eos=True)
    lp_after = completion_log_probs(after, tok, prompts, completions, add_eos=True)
    assert (lp_after > lp_before + 1.0).all()
    assert metrics["train/steps"] == 45 and metrics["train/tokens_per_s"] > 0


def test_loss_is_on_the_completion_only(tiny_model_dir, tmp_path):
    """Training on prompts ending in 'Q' must not teach the model to produce 'Q' after '5+5'."""
    sft = pd.DataFrame({"prompt": ["5+5Q"] * 32, "completion": ["1"] * 32})
    out = tmp_path / "m"
    train_sft(
        tiny_model_dir,
        sft,
        out,
        TrainConfig(epochs=10, batch_size=8, learning_rate=3e-3, logging_steps=1000),
        "cpu",
        seed=0,
    )
    tok = AutoTokenizer.from_pretrained(out)
    before, after = (AutoModelForCausalLM.from_pretrained(p) for p in (tiny_model_dir, out))
    q_before = completion_log_probs(before, tok, ["5+5"], ["Q"])[0]
    q_after = completion_log_probs(after, tok, ["5+5"], ["Q"])[0]
    one_after = completion_log_probs(after, tok, ["5+5Q"], ["1"])[0]
    assert one_after > -0.5  # the completion was learnt ...
    assert q_after < q_before + 1.0  # ... the prompt's last token was not


def test_tokenize_sft_gives_exactly_trls_own_preparation(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from rsft_gen.train import tokenize_sft

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    sft = pd.DataFrame({"prompt": ["1+1=", "12+34=", "a long prompt: "], "completion": ["2", "46", " x"]})
    ours = tokenize_sft(tok, sft, max_length=64)
    args = SFTConfig(
        output_dir=str(tmp_path), completion_only_loss=True, max_length=64, use_cpu=True, bf16=False, report_to=[]
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=Dataset.from_pandas(sft),
        processing_class=tok,
    )
    assert ours["input_ids"] == trainer.train_dataset["input_ids"]
    assert ours["labels"] == trainer.train_dataset["labels"]
    assert all(ids[-1] == tok.eos_token_id for ids in ours["input_ids"])
