"""LoRA (train.peft) merged into a full checkpoint, frozen parameters, and
train.init: base (ReST-EM: every round re-trains the base model)."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from rsft_gen.config import RecipeError, TrainConfig
from rsft_gen.data import addition_problems
from rsft_gen.loop import run
from rsft_gen.train import train_sft


@pytest.fixture(scope="module")
def sft():
    return addition_problems(32, [1, 2], seed=0).rename(columns={"answer": "completion"})


def weights(path):
    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def test_lora_is_merged_into_a_plain_checkpoint(tiny_model_dir, sft, tmp_path):
    cfg = TrainConfig(
        batch_size=8, learning_rate=1e-2, peft={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    )
    m = train_sft(tiny_model_dir, sft, tmp_path / "lora", cfg, "cpu", seed=0)
    assert m["train/trainable_params"] < 10_000  # only the adapters train
    assert not (tmp_path / "lora" / "adapter_config.json").exists()  # a full model, loadable by vLLM
    before, after = weights(tiny_model_dir), weights(tmp_path / "lora")
    assert before.keys() == after.keys() and not any("lora" in k for k in after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)


def test_freeze_patterns(tiny_model_dir, sft, tmp_path):
    cfg = TrainConfig(batch_size=8, freeze=[r"embed_tokens", r"layers\.0\."])
    m = train_sft(tiny_model_dir, sft, tmp_path / "frozen", cfg, "cpu", seed=0)
    assert m["train/frozen_tensors"] > 1
    before, after = weights(tiny_model_dir), weights(tmp_path / "frozen")
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])
    assert not torch.equal(before["model.layers.1.mlp.up_proj.weight"], after["model.layers.1.mlp.up_proj.weight"])
    with pytest.raises(RecipeError, match="matches no parameter"):
        train_sft(tiny_model_dir, sft, tmp_path / "x", TrainConfig(freeze=["nope"]), "cpu", seed=0)


def test_rest_em_base_init_with_lora(fast_recipe, monkeypatch):
    """train.init=base: round 2 trains from the base model, not round 1's."""
    import rsft_gen.loop as loop

    starts = []
    real = loop.train_sft
    monkeypatch.setattr(loop, "train_sft", lambda start, *a, **k: starts.append(str(start)) or real(start, *a, **k))
    recipe = fast_recipe(
        "rounds=2",
        "seed_sft.n=0",
        "accept.rule=all",
        "train.init=base",
        "train.peft={r: 2, lora_alpha: 4}",
        "data.train_prompts=16",
        "data.eval_prompts=8",
    )
    run_dir = run(recipe)
    assert starts == [str(run_dir / "base_model")] * 2
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1, 2]
