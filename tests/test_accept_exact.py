"""Exactness of likelihood-ratio acceptance, checked against an enumerated distribution.

A tiny Llama with a 6-token vocabulary and completions of at most 2 tokens has
31 possible outcomes, so q (the sampler: temperature, top-p) and the target p
are known exactly. We draw through the real HF generator, accept with
`decide`, and chi-square the accepted samples against p. A deliberately wrong
log q (the raw model, ignoring temperature) must fail the same test, which
shows the test can fail.

    python -m pytest -q tests/test_accept_exact.py
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import chisquare
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rsft_gen.accept import decide
from rsft_gen.config import AcceptConfig
from rsft_gen.generate import SamplingSettings
from rsft_gen.generate_hf import HFGenerator

PROMPT = "ab"
VOCAB = ["<pad>", "</s>", "a", "b", "c", "d"]
EOS = 1
MAX_NEW = 2
N_SAMPLES = 24000
ALPHA = 0.01


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(VOCAB)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", clean_up_tokenization_spaces=False)


def tiny_llama(seed: int, logit_scale: float, noise: float = 0.0, noise_seed: int = 1) -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=16, pad_token_id=0, eos_token_id=EOS, bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # a random init is nearly uniform; scale the head so temperature matters
        model.lm_head.weight.mul_(logit_scale)
        if noise:
            g = torch.Generator().manual_seed(noise_seed)
            model.lm_head.weight.add_(noise * torch.randn(model.lm_head.weight.shape, generator=g))
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, EOS
    return model.eval()


@torch.no_grad()
def exact_distribution(model, temperature: float = 1.0, top_p: float = 1.0) -> dict[tuple, float]:
    """Every outcome (token ids, EOS included) and its probability, written independently of
    transformers' warpers: softmax(logits / T), then keep the smallest top set with mass >= top_p."""
    prompt = tiny_tokenizer()(PROMPT)["input_ids"]

    def step(prefix):
        logits = model(torch.tensor([prompt + prefix])).logits[0, -1].double()
        probs = torch.softmax(logits / temperature, -1)
        if top_p < 1.0:
            sorted_p, idx = probs.sort(descending=True)
            keep = torch.zeros_like(probs, dtype=torch.bool)
            keep[idx[(sorted_p.cumsum(0) - sorted_p) < top_p]] = True
            probs = torch.where(keep, probs, 0.0)
            probs = probs / probs.sum()
        return probs.tolist()

    out: dict[tuple, float] = {}

    def walk(prefix, prob):
        if len(prefix) == MAX_NEW or (prefix and prefix[-1] == EOS):
            out[tuple(prefix)] = prob
            return
        for tok, p in enumerate(step(prefix)):
            if p > 0:
                walk(prefix + [tok], prob * p)

    walk([], 1.0)
    return out


def outcome_rewards(outcomes) -> dict[tuple, float]:
    """A fixed arbitrary reward in [0, 1] per outcome."""
    rng = np.random.default_rng(123)
    return {o: float(rng.random()) for o in sorted(outcomes)}


def chi2_pvalue(accepted: list[tuple], p: dict[tuple, float]) -> float:
    """Chi-square goodness of fit of the accepted outcomes to p; bins with expected < 5 merged."""
    counts = Counter(accepted)
    total = sum(counts.values())
    if any(p.get(o, 0.0) == 0.0 for o in counts):
        return 0.0  # an outcome the target cannot produce
    keys = sorted(p, key=p.get, reverse=True)
    norm = sum(p.values())
    exp = np.array([p[k] / norm * total for k in keys])
    obs = np.array([counts.get(k, 0) for k in keys], dtype=float)
    big = exp >= 5
    e, o = list(exp[big]), list(obs[big])
    if (~big).any():
        if exp[~big].sum() >= 5:
            e.append(exp[~big].sum()), o.append(obs[~big].sum())
        else:  # too little for its own bin: fold into the smallest kept bin
            e[-1] += exp[~big].sum()
            o[-1] += obs[~big].sum()
    return float(chisquare(o, e).pvalue)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """The proposal, and per temperature a target: the proposal's head sharpened by 1/T and
    perturbed, so p differs from q yet M stays small enough for ~20% acceptance."""
    root = tmp_path_factory.mktemp("exact_models")
    tok = tiny_tokenizer()
    models = {"proposal": tiny_llama(0, 30.0)} | {f"target_{t}": tiny_llama(0, 30.0 / t, noise=0.2) for t in (1.0, 0.7)}
    for name, model in models.items():
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


def draw(models_dir, temperature: float, top_p: float, seed: int) -> tuple[pd.DataFrame, LlamaForCausalLM]:
    model = LlamaForCausalLM.from_pretrained(models_dir / "proposal").eval()
    gen = HFGenerator(str(models_dir / "proposal"), model=model, tokenizer=tiny_tokenizer())
    cands = gen.generate([0], [PROMPT], SamplingSettings(n=N_SAMPLES, temperature=temperature, top_p=top_p, max_new_tokens=MAX_NEW, seed=seed), progress=False)
    df = pd.DataFrame([c.__dict__ for c in cands]).assign(prompt=PROMPT)
    df["outcome"] = [tuple(ids) for ids in df.token_ids]
    df["reward"] = 0.0
    return df, model


def accepted_outcomes(df: pd.DataFrame, cfg: AcceptConfig, seed: int) -> list[tuple]:
    decided, metrics = decide(df, cfg, seed=seed)
    assert metrics["accept/bound_violations"] == 0, metrics
    assert metrics["accept/accepted"] > 1000, metrics  # enough for the test to have power
    return list(decided.outcome[decided.accepted])


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (0.7, 0.9)])
def test_reward_tilted_is_exact(models_dir, temperature, top_p):
    df, model = draw(models_dir, temperature, top_p, seed=11)
    q = exact_distribution(model, temperature, top_p)
    rewards = outcome_rewards(exact_distribution(model))  # every outcome, whatever the truncation
    beta = 0.25
    df["reward"] = df.outcome.map(rewards)
    got = accepted_outcomes(df, AcceptConfig(rule="likelihood_ratio", target="reward_tilted", beta=beta, r_max=1.0), seed=5)

    p = {o: qo * math.exp(rewards[o] / beta) for o, qo in q.items()}  # p ∝ q·exp(r/β)
    p_value = chi2_pvalue(got, p)
    print(f"reward_tilted T={temperature} top_p={top_p}: chi2 p-value {p_value:.4f}, accepted {len(got)}")
    assert p_value > ALPHA
    if temperature != 1.0:  # the test tells temperatures apart: p built on the raw model's q fails
        raw = exact_distribution(model)
        wrong = {o: raw[o] * math.exp(rewards[o] / beta) for o in raw}
        wrong_p = chi2_pvalue(got, wrong)
        print(f"  against p built on the untempered q: p-value {wrong_p:.2e}")
        assert wrong_p < ALPHA


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (0.7, 0.9)])
def test_target_model_is_exact_and_wrong_q_fails(models_dir, temperature, top_p):
    df, model = draw(models_dir, temperature, top_p, seed=21)
    q = exact_distribution(model, temperature, top_p)
    target_dir = models_dir / f"target_{temperature}"
    target = LlamaForCausalLM.from_pretrained(target_dir).eval()
    p_full = exact_distribution(target)
    # On q's support the accepted set is distributed as p restricted to it (all of p when top_p = 1).
    p = {o: p_full[o] for o in q}
    log_m = max(math.log(p[o] / q[o]) for o in q) + 1e-6  # the exact bound, so no violations
    cfg = AcceptConfig(rule="likelihood_ratio", target="model", target_model=str(target_dir), log_m=log_m)
    got = accepted_outcomes(df, cfg, seed=7)
    p_value = chi2_pvalue(got, p)
    print(f"target model T={temperature} top_p={top_p}: chi2 p-value {p_value:.4f}, accepted {len(got)}, log M {log_m:.3f}")
    assert p_value > ALPHA
    assert chi2_pvalue(list(df.outcome), p) < ALPHA  # the proposals themselves are not p: rejection did the work

    if temperature == 1.0 and top_p == 1.0:
        return  # there the raw model is the sampler: nothing to get wrong
    # Wrong q: the raw model's log-likelihood, ignoring temperature and top-p.
    raw = exact_distribution(model)
    wrong = df.assign(log_q=df.outcome.map(lambda o: math.log(raw[o])))
    wrong_log_m = max(math.log(p[o] / raw[o]) for o in q) + 1e-6
    got_wrong = accepted_outcomes(wrong, AcceptConfig(**{**vars(cfg), "log_m": wrong_log_m}), seed=7)
    wrong_p = chi2_pvalue(got_wrong, p)
    print(f"  wrong q (untempered): chi2 p-value {wrong_p:.2e}, accepted {len(got_wrong)}")
    assert wrong_p < ALPHA
