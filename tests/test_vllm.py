"""The vLLM backend on the CPU build: one engine for the whole session (its start takes ~1 min).

python -m pytest -q tests/test_vllm.py        # or: -m "not vllm" to leave these out
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rsft_gen.config import TinyModelConfig
from rsft_gen.generate import SamplingSettings
from rsft_gen.likelihood import token_ids_log_probs
from rsft_gen.tiny_model import build_tiny_model

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

PROMPTS = ["12+34=", "7+8=", "1+2=", "55+44=", "9+90="]


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir):
    """One engine on the tiny model, shared by every test here; it can reload weights in place."""
    from rsft_gen.generate_vllm import ReloadingVLLMGenerator

    gen = ReloadingVLLMGenerator(tiny_model_dir, {"kv_cache_memory_bytes": 64 << 20})
    yield gen
    gen.close()


def hf_log_q(model_dir: str, cands, prompts: list[str], temperature: float, top_p: float) -> np.ndarray:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    p_ids = [tok(prompts[c.prompt_id])["input_ids"] for c in cands]
    return token_ids_log_probs(model, p_ids, [c.token_ids for c in cands], temperature=temperature, top_p=top_p)


def test_n_samples_per_prompt(vllm_engine, tiny_model_dir):
    settings = SamplingSettings(n=4, temperature=1.0, max_new_tokens=6, seed=0)
    cands = vllm_engine.generate([10, 11, 12], PROMPTS[:3], settings, progress=False)
    assert [(c.prompt_id, c.sample_index) for c in cands] == [(p, i) for p in (10, 11, 12) for i in range(4)]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for c in cands:
        assert c.num_tokens == len(c.token_ids) <= 6
        assert (c.finish_reason == "stop") == (c.token_ids[-1] == tok.eos_token_id)
        text_ids = c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids
        assert c.completion == tok.decode(text_ids, skip_special_tokens=True)
        assert np.isfinite(c.log_q) and c.log_q < 0
    assert len({tuple(c.token_ids) for c in cands}) > 1  # sampled, not copies


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_log_q_matches_hf(vllm_engine, tiny_model_dir, temperature, top_p):
    settings = SamplingSettings(n=8, temperature=temperature, top_p=top_p, max_new_tokens=8, seed=3)
    cands = vllm_engine.generate(list(range(len(PROMPTS))), PROMPTS, settings, progress=False)
    hf = hf_log_q(tiny_model_dir, cands, PROMPTS, temperature, top_p)
    diff = np.abs(np.array([c.log_q for c in cands]) - hf)
    print(
        f"log q, vLLM vs HF at T={temperature} top_p={top_p}: max abs diff {diff.max():.2e} over {len(cands)} samples"
    )
    assert diff.max() < 1e-3


def test_greedy_gives_n_copies_with_log_q_zero(vllm_engine):
    cands = vllm_engine.generate(
        [0, 1], PROMPTS[:2], SamplingSettings(n=3, temperature=0.0, max_new_tokens=5), progress=False
    )
    assert len(cands) == 6 and all(c.log_q == 0.0 for c in cands)
    assert len({tuple(c.token_ids) for c in cands[:3]}) == 1


def test_same_seed_same_candidates(vllm_engine):
    def sample(seed, ids, prompts):
        cands = vllm_engine.generate(
            ids, prompts, SamplingSettings(n=4, temperature=1.0, max_new_tokens=6, seed=seed), progress=False
        )
        return {(c.prompt_id, c.sample_index): (c.token_ids, c.log_q) for c in cands}

    ids = list(range(len(PROMPTS)))
    first, again, other = sample(7, ids, PROMPTS), sample(7, ids, PROMPTS), sample(8, ids, PROMPTS)
    assert first == again
    assert first != other
    # A prompt's samples depend on its seed and id only, not on the rest of the batch.
    alone = sample(7, [3], [PROMPTS[3]])
    assert all(alone[k] == first[k] for k in alone)


def test_without_log_q_the_samples_are_the_same(vllm_engine):
    # generate.log_q=false skips vLLM's per-token log-probs; sampling must not depend on them.
    with_q = vllm_engine.generate(
        [0, 1, 2],
        PROMPTS[:3],
        SamplingSettings(n=4, temperature=0.8, top_p=0.9, max_new_tokens=6, seed=5),
        progress=False,
    )
    without = vllm_engine.generate(
        [0, 1, 2],
        PROMPTS[:3],
        SamplingSettings(n=4, temperature=0.8, top_p=0.9, max_new_tokens=6, seed=5, log_q=False),
        progress=False,
    )
    assert [c.token_ids for c in without] == [c.token_ids for c in with_q]
    assert [c.completion for c in without] == [c.completion for c in with_q]
    assert all(np.isnan(c.log_q) for c in without) and all(np.isfinite(c.log_q) for c in with_q)


def test_load_weights_in_place_matches_a_fresh_model(vllm_engine, tiny_model_dir, tmp_path):
    other = str(build_tiny_model(tmp_path / "other", TinyModelConfig(), seed=1))
    settings = SamplingSettings(n=4, temperature=0.7, top_p=0.9, max_new_tokens=8, seed=1)
    try:
        vllm_engine.reload(other)
        cands = vllm_engine.generate(list(range(len(PROMPTS))), PROMPTS, settings, progress=False)
        diff = np.abs(np.array([c.log_q for c in cands]) - hf_log_q(other, cands, PROMPTS, 0.7, 0.9))
        assert diff.max() < 1e-3  # every layer, the tied lm_head included, now holds the new weights
    finally:
        vllm_engine.reload(tiny_model_dir)


@pytest.mark.slow
def test_two_rounds_with_vllm_backend(fast_recipe, tmp_path):
    from rsft_gen.loop import run

    recipe = fast_recipe(
        "rounds=2",
        "generate.backend=vllm",
        "generate.vllm.kv_cache_memory_bytes=67108864",
        "accept.rule=all",
        "generate.log_q=true",
    )
    run_dir = run(recipe)
    state = json.loads((run_dir / "state.json").read_text())
    assert state["finished"] and state["rounds_done"] == 2
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [rec["round"] for rec in lines] == [0, 1, 2]
    import pandas as pd

    for r in (1, 2):
        cands = pd.read_parquet(run_dir / f"round_{r:02d}" / "candidates.parquet")
        assert len(cands) == recipe.data.train_prompts * recipe.generate.n
        assert (cands.log_q < 0).all() and cands.log_q.notna().all()
        assert (run_dir / f"round_{r:02d}" / "model" / "config.json").exists()


def test_engine_options_recipe_wins_over_cpu_defaults():
    from rsft_gen.config import RecipeError
    from rsft_gen.generate_vllm import engine_options

    opts = engine_options("m", {"max_model_len": 128, "enforce_eager": False, "seed": 3}, cpu=True)
    assert opts["max_model_len"] == 128 and opts["enforce_eager"] is False and opts["seed"] == 3
    assert opts["kv_cache_memory_bytes"] == 1 << 30 and opts["logprobs_mode"] == "processed_logprobs"
    # A recipe that sizes memory as a share of RAM gets exactly that, not our fixed KV cache size.
    opts = engine_options("m", {"gpu_memory_utilization": 0.2, "tensor_parallel_size": 2}, cpu=True)
    assert (
        "kv_cache_memory_bytes" not in opts
        and opts["gpu_memory_utilization"] == 0.2
        and opts["tensor_parallel_size"] == 2
    )
    assert "enforce_eager" not in engine_options("m", {}, cpu=False)  # GPU: vLLM's own defaults
    with pytest.raises(RecipeError, match="generate.vllm.logprobs_mode"):
        engine_options("m", {"logprobs_mode": "raw_logprobs"}, cpu=True)
