"""Loss-weighted selection of a labelled set: the dataset backend, the model_loss reward,
and the likelihood-ratio rule with a uniform proposal (accept.target: reward_weighted).

    python -m pytest -q tests/test_accept_dataset.py
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import chisquare
from transformers import AutoModelForCausalLM, AutoTokenizer

from reward.model_loss import model_loss
from rsft_gen.accept import decide
from rsft_gen.backends import GeneratorCache, eval_backend, make_generator
from rsft_gen.config import AcceptConfig, GenerateConfig, RewardSpec, load_recipe
from rsft_gen.generate import SamplingSettings
from rsft_gen.generate_dataset import DatasetGenerator
from rsft_gen.generate_hf import HFGenerator
from rsft_gen.loop import with_model_path

PROMPTS = pd.DataFrame(
    {"prompt_id": [0, 1, 2, 3], "prompt": ["1+2=", "12+30=", "5+5=", "7+8="], "answer": ["3", "42", "10", "15"]}
)


def test_dataset_generator_returns_the_reference_completions(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    gen = make_generator(GenerateConfig(backend="dataset"), tiny_model_dir, "cpu", prompts=PROMPTS)
    assert isinstance(gen, DatasetGenerator)
    cands = gen.generate([2, 0, 1, 3], PROMPTS.prompt.tolist(), SamplingSettings(n=8))
    assert [(c.prompt_id, c.completion) for c in cands] == [(2, "10"), (0, "3"), (1, "42"), (3, "15")]
    assert all(c.sample_index == 0 and c.finish_reason == "stop" for c in cands)  # one per prompt, whatever n
    assert all(c.log_q == pytest.approx(-math.log(4)) for c in cands)  # uniform over the round's N = 4
    assert cands[2].token_ids == tok("42", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with pytest.raises(ValueError, match="no reference completion"):
        gen.generate([9], ["?"], SamplingSettings())


def test_dataset_backend_evaluates_by_sampling(tiny_model_dir):
    # The dataset backend has no model to sample: evaluation uses eval.backend (unset: hf), never a silent swap.
    recipe = load_recipe(None, ["generate.backend=dataset"])
    gen = make_generator(recipe.generate, tiny_model_dir, "cpu", backend=eval_backend(recipe))
    assert isinstance(gen, HFGenerator)
    gen.close()
    with pytest.raises(ValueError, match="dataset backend samples nothing"):
        make_generator(GenerateConfig(backend="dataset"), tiny_model_dir, "cpu")
    assert eval_backend(load_recipe(None, ["generate.backend=dataset", "eval.backend=vllm"])) == "vllm"
    cache = GeneratorCache(recipe, "cpu")  # one cache: the round's dataset generator, then the eval sampler
    assert isinstance(cache.get(tiny_model_dir, prompts=PROMPTS), DatasetGenerator)
    assert isinstance(cache.get(tiny_model_dir, backend=eval_backend(recipe)), HFGenerator)
    cache.close()


def test_model_loss_is_the_mean_token_loss_of_the_completion(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    got = model_loss(PROMPTS.prompt.tolist(), PROMPTS.answer.tolist(), model_path=tiny_model_dir, device="cpu")
    for prompt, answer, loss in zip(PROMPTS.prompt, PROMPTS.answer, got):
        p = tok(prompt)["input_ids"]
        c = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():  # HF's own loss, prompt tokens masked: an independent computation
            want = model(input_ids=torch.tensor([p + c]), labels=torch.tensor([[-100] * len(p) + c])).loss.item()
        assert loss == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="model_path"):
        model_loss(["a"], ["b"])


def test_loop_passes_the_current_model_to_model_aware_rewards():
    specs = [
        RewardSpec(name="exact_match"),
        RewardSpec(name="model_loss"),
        RewardSpec(name="model_loss", kwargs={"model_path": "/fixed"}),
    ]
    out = with_model_path(specs, "/runs/x/round_01/model")
    assert "model_path" not in out[0].kwargs
    assert out[1].kwargs["model_path"] == "/runs/x/round_01/model"
    assert out[2].kwargs["model_path"] == "/fixed"  # the recipe's own choice wins


def test_reward_weighted_accepts_with_w_over_m_q():
    loss = np.array([0.5, 2.0, 1.0, 4.0, 0.0, 2.5])
    n = len(loss)
    df = pd.DataFrame({"prompt_id": range(n), "prompt": "p", "completion": "c", "reward": loss, "log_q": -math.log(n)})
    cfg = AcceptConfig(rule="likelihood_ratio", target="reward_weighted", log_m="auto")
    decided, m = decide(df, cfg, seed=0)
    w = loss / loss.sum()
    big_m = n * w.max()
    np.testing.assert_allclose(decided.accept_prob, w / (big_m / n))  # w_i / (M q_i) = L_i / max L
    assert m["accept/log_m"] == pytest.approx(math.log(big_m))
    assert (
        m["accept/bound_violations"] == 0 and m["accept/nonfinite"] == 0
    )  # a zero loss is a weight of 0, not an error
    assert decided.accepted[3] and not decided.accepted[4]
    assert "pilot_samples" not in " ".join(m)  # the set is the whole support: M is exact, no pilot

    # Pooled over seeds, the accepted examples are distributed as w.
    counts = np.zeros(n)
    for seed in range(300):
        counts += decide(df, cfg, seed=seed)[0].accepted.to_numpy()
    keep = w > 0
    expected = w[keep] / w[keep].sum() * counts[keep].sum()
    assert chisquare(counts[keep], expected).pvalue > 0.01
    assert counts[4] == 0
    # ... and unlike uniform selection, which the same test rejects.
    assert chisquare(counts[keep], np.full(keep.sum(), counts[keep].sum() / keep.sum())).pvalue < 0.01

    with pytest.raises(ValueError, match="rewards >= 0"):
        decide(df.assign(reward=-loss), cfg, seed=0)


def test_dataset_backend_model_loss_round_end_to_end(fast_recipe):
    """A loop round on the dataset backend: reference completions, their loss under the
    current model, loss-weighted acceptance, SFT on the accepted."""
    from rsft_gen.loop import run

    recipe = fast_recipe(
        "seed_sft.n=0",
        "data.train_prompts=48",
        "data.eval_prompts=16",
        "generate.backend=dataset",
        # exact_match first (weight 0): evaluation counts the first reward as correctness; the loss drives acceptance.
        "rewards=[{name: exact_match, weight: 0.0}, {name: model_loss}]",
        "accept.rule=likelihood_ratio",
        "accept.target=reward_weighted",
        "accept.log_m=auto",
        "select.max_per_prompt=null",
    )
    run_dir = run(recipe)
    scored = pd.read_parquet(run_dir / "round_01" / "decided.parquet")  # scored.parquet + the accept decisions
    prompts = pd.read_parquet(run_dir / "data" / "train.parquet")
    assert len(scored) == 48 and (scored.completion == scored.answer).all()
    np.testing.assert_allclose(scored.log_q, -math.log(48))
    assert (scored["reward/model_loss"] > 0).all()
    np.testing.assert_allclose(scored.accept_prob, scored.reward / scored.reward.max())
    # The reward really is the loss under the round's starting model.
    want = model_loss(
        prompts.prompt.tolist()[:3], prompts.answer.tolist()[:3], model_path=str(run_dir / "base_model"), device="cpu"
    )
    np.testing.assert_allclose(scored.reward[:3], want, rtol=1e-4)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    r1 = next(rec for rec in metrics if rec["round"] == 1)
    assert r1["accept/accepted"] == scored.accepted.sum() > 0
    assert r1["accept/bound_violations"] == 0
    # The whole labelled set is q's support: covered by construction, so exact; the recipe's dedup is not.
    assert r1["accept/target_coverage"] == 1.0 and r1["accept/exact"] == 1.0
    assert r1["select/exact"] == 0.0
    assert (run_dir / "round_01" / "model" / "config.json").exists()
