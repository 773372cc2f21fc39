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

from rsft_gen.accept import decide, selection_exactness
from rsft_gen.config import AcceptConfig, SelectConfig
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
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", clean_up_tokenization_spaces=False
    )


def tiny_llama(seed: int, logit_scale: float, noise: float = 0.0, noise_seed: int = 1) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
        pad_token_id=0,
        eos_token_id=EOS,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
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
def exact_distribution(
    model, temperature: float = 1.0, top_p: float = 1.0, prompt_text: str = PROMPT
) -> dict[tuple, float]:
    """Every outcome (token ids, EOS included) and its probability, written independently of
    transformers' warpers: softmax(logits / T), then keep the smallest top set with mass >= top_p."""
    prompt = tiny_tokenizer()(prompt_text)["input_ids"]

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
    cands = gen.generate(
        [0],
        [PROMPT],
        SamplingSettings(n=N_SAMPLES, temperature=temperature, top_p=top_p, max_new_tokens=MAX_NEW, seed=seed),
        progress=False,
    )
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
    got = accepted_outcomes(
        df, AcceptConfig(rule="likelihood_ratio", target="reward_tilted", beta=beta, r_max=1.0), seed=5
    )

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
    print(
        f"target model T={temperature} top_p={top_p}: chi2 p-value {p_value:.4f}, "
        f"accepted {len(got)}, log M {log_m:.3f}"
    )
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


# --- what is exact: coverage of p by the sampler's support, selection, a bound per prompt -----


def coverage_config(models_dir, temperature: float, **kw) -> AcceptConfig:
    return AcceptConfig(
        rule="likelihood_ratio", target="model", target_model=str(models_dir / f"target_{temperature}"), **kw
    )


@pytest.mark.parametrize("temperature,top_p,truncation", [(0.7, 0.9, ["top_p=0.9"]), (1.0, 1.0, None)])
def test_target_coverage_estimate_matches_the_enumerated_mass(models_dir, temperature, top_p, truncation, caplog):
    df, model = draw(models_dir, temperature, top_p, seed=31)
    q = exact_distribution(model, temperature, top_p)
    p_full = exact_distribution(LlamaForCausalLM.from_pretrained(models_dir / f"target_{temperature}").eval())
    true_cov = sum(p_full[o] for o in q)  # p(supp q): 1 without truncation
    decided, m = decide(
        df, coverage_config(models_dir, temperature, log_m="auto", log_m_margin=0.05), seed=3, truncation=truncation
    )
    cov, se = m["accept/target_coverage"], m["accept/target_coverage_se"]
    print(
        f"T={temperature} top_p={top_p}: coverage {cov:.4f} ± {se:.4f}, "
        f"enumerated {true_cov:.4f}, exact {m['accept/exact']}"
    )
    assert abs(cov - true_cov) < 4 * se and se < 0.01  # the estimate is right, and tight enough to tell 0.85 from 1
    assert m["accept/bound_violations"] == 0
    if top_p < 1.0:
        assert true_cov < 0.9 and m["accept/exact"] == 0.0
        assert "exact sample of p restricted to the sampler's support (covering ~" in caplog.text
    else:  # full support, though the caller did not say so: the coverage estimate alone justifies the claim
        assert true_cov == pytest.approx(1.0) and m["accept/exact"] == 1.0
    # Told the sampler has full support, the rule believes it; told it truncates, only the estimate counts.
    assert (
        decide(df, coverage_config(models_dir, temperature, log_m=m["accept/log_m"]), seed=3, truncation=[])[1][
            "accept/exact"
        ]
        == 1.0
    )


def split_into_prompts(df: pd.DataFrame, per_prompt: int) -> pd.DataFrame:
    """The single prompt's draws as many prompts with the same text, in sampling order."""
    return df.assign(prompt_id=np.arange(len(df)) // per_prompt, sample_index=np.arange(len(df)) % per_prompt)


def test_selection_cap_keeps_the_sample_exact_and_dedup_does_not(models_dir):
    from rsft_gen.select import select

    df, model = draw(models_dir, 1.0, 1.0, seed=41)
    q = exact_distribution(model)
    p = {o: exact_distribution(LlamaForCausalLM.from_pretrained(models_dir / "target_1.0").eval())[o] for o in q}
    log_m = max(math.log(p[o] / q[o]) for o in q) + 1e-6
    decided, m = decide(
        split_into_prompts(df, 24), coverage_config(models_dir, 1.0, log_m=log_m), seed=9, truncation=[]
    )
    assert m["accept/exact"] == 1.0
    capped, _ = select(decided, SelectConfig(dedup=False, max_per_prompt=2), None, seed=0)
    deduped, _ = select(decided, SelectConfig(dedup=True), None, seed=0)
    outcome = dict(zip(zip(decided.prompt_id, decided.completion), decided.outcome))
    got = {
        name: [outcome[k] for k in zip(s.prompt_id, s.completion)]
        for name, s in (("capped", capped), ("deduped", deduped))
    }
    p_capped, p_dedup = chi2_pvalue(got["capped"], p), chi2_pvalue(got["deduped"], p)
    print(
        f"select: cap 2 per prompt chi2 p {p_capped:.3f} ({len(got['capped'])} rows); "
        f"dedup p {p_dedup:.2e} ({len(got['deduped'])} rows)"
    )
    assert (
        len(got["capped"]) < decided.accepted.sum() and p_capped > ALPHA
    )  # the cap removed rows, yet the set is still p
    assert p_dedup < ALPHA  # dedup under-represents frequent outcomes
    assert selection_exactness(SelectConfig(dedup=False, max_per_prompt=2), m) == {"select/exact": 1.0}
    assert selection_exactness(SelectConfig(dedup=False, difficulty_filter=True), m) == {"select/exact": 0.0}
    assert selection_exactness(SelectConfig(dedup=True, max_per_prompt=4), m) == {"select/exact": 0.0}
    assert selection_exactness(SelectConfig(dedup=False, mix_seed_fraction=0.1), m) == {"select/exact": 0.0}
    assert selection_exactness(SelectConfig(dedup=False), {**m, "accept/exact": 0.0}) == {"select/exact": 0.0}
    assert selection_exactness(SelectConfig(), {"accept/accepted": 3}) == {}  # rules that claim nothing report nothing


PROMPTS = ["ab", "ba", "cd", "dc", "a", "bb", "cab", "d"]


@pytest.fixture(scope="module")
def many_prompts(models_dir):
    """3000 draws for each of 8 prompts (T = 1, full support) and every prompt's exact p and q."""
    model = LlamaForCausalLM.from_pretrained(models_dir / "proposal").eval()
    target = LlamaForCausalLM.from_pretrained(models_dir / "target_1.0").eval()
    gen = HFGenerator(str(models_dir / "proposal"), model=model, tokenizer=tiny_tokenizer())
    cands = gen.generate(
        list(range(len(PROMPTS))), PROMPTS, SamplingSettings(n=3000, max_new_tokens=MAX_NEW, seed=13), progress=False
    )
    df = pd.DataFrame([c.__dict__ for c in cands])
    df["prompt"] = [PROMPTS[i] for i in df.prompt_id]
    df["outcome"] = [tuple(ids) for ids in df.token_ids]
    df["reward"] = 0.0
    exact = {x: (exact_distribution(model, prompt_text=x), exact_distribution(target, prompt_text=x)) for x in PROMPTS}
    return df, exact


def test_per_prompt_bound_accepts_more_and_stays_exact_per_prompt(models_dir, many_prompts):
    df, exact = many_prompts
    true_log_m = {x: max(math.log(p[o] / q[o]) for o in q) for x, (q, p) in exact.items()}
    # Expected acceptance per candidate is 1/M (p has all its mass on q's support here).
    want_global = math.exp(-max(true_log_m.values()))
    want_per_prompt = np.mean([math.exp(-v) for v in true_log_m.values()])
    print(
        f"enumerated: {want_global:.3f} -> {want_per_prompt:.3f} accepted per candidate "
        f"({want_per_prompt / want_global:.2f}x)"
    )
    assert want_per_prompt / want_global > 1.5
    # The pilot misses outcomes with q ~ 1e-4 and a high p/q; a margin of 1.3 covers them on this model
    # (every bound then holds: exact), 0.1 does not (a few violations, reported as such).
    for margin in (0.1, 1.3):
        runs = {}
        for log_m in ("auto", "per_prompt"):
            cfg = coverage_config(models_dir, 1.0, log_m=log_m, pilot_fraction=0.1, log_m_margin=margin)
            runs[log_m] = decided, m = decide(df, cfg, seed=17, truncation=[])
            assert m["accept/exact"] == float(m["accept/bound_violations"] == 0)  # exact only when every bound held
            print(
                f"margin {margin} log_m={log_m}: accepted {m['accept/accepted']} of {len(df)}, "
                f"violations {m['accept/bound_violations']}"
            )
        gain = runs["per_prompt"][1]["accept/accepted"] / runs["auto"][1]["accept/accepted"]
        print(f"margin {margin}: per-prompt bound accepts {gain:.2f}x the samples of one global bound")
        assert gain > 1.3
        decided, m = runs["per_prompt"]
        assert m["accept/pilot_samples"] == 8 * 300 and not decided.accepted[decided.pilot].any()
        assert m["accept/prompts_without_bound"] == 0
        for x in PROMPTS:  # each prompt's accepted samples follow its own p(.|x)
            got = list(decided.outcome[decided.accepted & (decided.prompt == x)])
            assert chi2_pvalue(got, exact[x][1]) > ALPHA / len(PROMPTS), x
    assert m["accept/bound_violations"] == 0 and m["accept/exact"] == 1.0  # margin 1.3


def test_per_prompt_bound_is_refused_where_it_has_no_meaning():
    from rsft_gen.config import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=r"'accept.log_m' is per_prompt.*accept.r_max: per_prompt"):
        load_recipe(None, ["accept.rule=likelihood_ratio", "accept.log_m=per_prompt"])
    load_recipe(
        None,
        ["accept.rule=likelihood_ratio", "accept.target=model", "accept.target_model=x", "accept.log_m=per_prompt"],
    )
