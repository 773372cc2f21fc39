"""HF backend: n samples per prompt, seeded, and log q exactly the sampling distribution's."""

import numpy as np
import pytest
from transformers import AutoModelForCausalLM

from rsft_gen.generate import SamplingSettings, candidates_frame
from rsft_gen.generate_hf import HFGenerator
from rsft_gen.likelihood import token_ids_log_probs

PROMPTS = ["1+2=", "12+34=", "7+80="]


@pytest.fixture(scope="module")
def gen(tiny_model_dir):
    return HFGenerator(tiny_model_dir, batch_size=2)  # batch 2 < 3 prompts: exercises padding and batching


def test_n_samples_per_prompt_with_ids_and_finish_reasons(gen):
    cands = gen.generate([10, 11, 12], PROMPTS, SamplingSettings(n=5, max_new_tokens=4, seed=0), progress=False)
    assert len(cands) == 15
    assert [c.prompt_id for c in cands] == [10] * 5 + [11] * 5 + [12] * 5
    assert [c.sample_index for c in cands[:5]] == list(range(5))
    eos = gen.tokenizer.eos_token_id
    for c in cands:
        assert c.num_tokens == len(c.token_ids) <= 4
        assert (c.finish_reason == "stop") == (c.token_ids[-1] == eos)
        assert eos not in c.token_ids[:-1]


def test_same_seed_same_candidates_other_seed_differs(gen):
    s = SamplingSettings(n=4, max_new_tokens=4, seed=7)
    a = [c.completion for c in gen.generate([0, 1, 2], PROMPTS, s, progress=False)]
    b = [c.completion for c in gen.generate([0, 1, 2], PROMPTS, s, progress=False)]
    s.seed = 8
    c = [c.completion for c in gen.generate([0, 1, 2], PROMPTS, s, progress=False)]
    assert a == b and a != c


def test_without_log_q_the_samples_are_the_same(gen):
    s = SamplingSettings(n=4, temperature=0.8, top_p=0.9, max_new_tokens=4, seed=5)
    with_q = gen.generate([0, 1, 2], PROMPTS, s, progress=False)
    s.log_q = False
    without = gen.generate([0, 1, 2], PROMPTS, s, progress=False)
    assert [c.token_ids for c in without] == [c.token_ids for c in with_q]
    assert all(np.isnan(c.log_q) for c in without) and all(np.isfinite(c.log_q) for c in with_q)


@pytest.mark.parametrize("temperature, top_p, top_k", [(1.0, 1.0, 0), (0.7, 0.9, 0), (1.3, 1.0, 5)])
def test_log_q_matches_teacher_forced_sampling_distribution(gen, tiny_model_dir, temperature, top_p, top_k):
    settings = SamplingSettings(n=6, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=4, seed=1)
    cands = gen.generate([0, 1, 2], PROMPTS, settings, progress=False)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt_ids = [gen.tokenizer(PROMPTS[c.prompt_id])["input_ids"] for c in cands]
    expected = token_ids_log_probs(
        model, prompt_ids, [c.token_ids for c in cands], temperature=temperature, top_p=top_p, top_k=top_k
    )
    got = np.array([c.log_q for c in cands])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    if temperature != 1.0:  # the raw model's likelihood is a different number: the check has teeth
        raw = token_ids_log_probs(model, prompt_ids, [c.token_ids for c in cands])
        assert np.abs(raw - got).max() > 1e-2


def test_greedy_has_zero_log_q_and_is_deterministic(gen):
    a = gen.generate([0, 1, 2], PROMPTS, SamplingSettings(n=1, temperature=0, max_new_tokens=4, seed=1), progress=False)
    b = gen.generate([0, 1, 2], PROMPTS, SamplingSettings(n=1, temperature=0, max_new_tokens=4, seed=2), progress=False)
    assert [c.completion for c in a] == [c.completion for c in b]
    assert all(c.log_q == 0.0 for c in a)


def test_candidates_frame_joins_prompt_columns(gen):
    import pandas as pd

    prompts = pd.DataFrame({"prompt_id": [0, 1], "prompt": PROMPTS[:2], "answer": ["3", "46"]})
    cands = gen.generate([0, 1], PROMPTS[:2], SamplingSettings(n=2, max_new_tokens=3), progress=False)
    df = candidates_frame(cands, prompts)
    assert list(df.answer) == ["3", "3", "46", "46"]
    assert {"completion", "log_q", "token_ids", "num_tokens", "finish_reason"} <= set(df.columns)
