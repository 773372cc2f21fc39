"""Acceptance rules on hand-made scored frames: every rule, its tie-breaking, the bound M.

python -m pytest -q tests/test_accept.py
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from rsft_gen import accept_target
from rsft_gen.accept import acceptance_probability, bound_violations, decide
from rsft_gen.config import AcceptConfig, RecipeError, load_recipe

NONFINITE = [np.nan, np.inf, -np.inf]


def frame(rewards_by_prompt: list[list[float]], **columns) -> pd.DataFrame:
    rows = [(pid, i, float(r)) for pid, rs in enumerate(rewards_by_prompt) for i, r in enumerate(rs)]
    df = pd.DataFrame(rows, columns=["prompt_id", "sample_index", "reward"])
    df["prompt"] = [f"p{pid}" for pid in df.prompt_id]
    df["completion"] = [f"c{pid}.{i}" for pid, i in zip(df.prompt_id, df.sample_index)]
    for name, values in columns.items():
        df[name] = values
    return df


def accepted_ids(decided: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(decided.prompt_id[decided.accepted], decided.sample_index[decided.accepted]))


# --- the functional core -------------------------------------------------------------------


def test_acceptance_probability_is_min_one_ratio_in_log_space():
    prob = acceptance_probability([-1.0, -3.0, -2.0, 500.0], [-2.0, -2.0, -2.0, -500.0], 1.0)
    np.testing.assert_allclose(prob, [1.0, math.exp(-2.0), math.exp(-1.0), 1.0])
    # Tiny probabilities stay exact in log space instead of underflowing p/q first.
    np.testing.assert_allclose(acceptance_probability([-800.0], [-799.0], 0.0), [math.exp(-1.0)])


@pytest.mark.parametrize("bad", NONFINITE)
@pytest.mark.parametrize("where", ["log_p", "log_q", "log_m"])
def test_acceptance_probability_nonfinite_input_gives_zero(bad, where):
    args = {"log_p": [-1.0, -1.0], "log_q": [-1.0, -1.0], "log_m": 0.0}
    args[where] = [bad, -1.0] if where != "log_m" else bad
    prob = acceptance_probability(**args)
    assert prob[0] == 0.0
    assert not bound_violations(**args)[0]


# --- deterministic rules ------------------------------------------------------------------


def test_threshold_accepts_at_or_above_and_never_nonfinite():
    df = frame([[0.0, 0.5, 1.0, 2.0, np.nan, np.inf, -np.inf]])
    decided, m = decide(df, AcceptConfig(rule="threshold", threshold=1.0), seed=0)
    assert accepted_ids(decided) == {(0, 2), (0, 3)}
    assert m["accept/nonfinite"] == 3 and m["accept/accepted"] == 2 and m["accept/candidates"] == 7
    assert m["accept/rate"] == pytest.approx(2 / 7) and m["accept/expected_rate"] == pytest.approx(2 / 7)
    assert m["accept/reward_mean"] == pytest.approx(3.5 / 4) and m["accept/reward_accepted_mean"] == pytest.approx(1.5)


def test_all_accepts_every_finite_candidate():
    df = frame([[0.0, -3.0, np.nan], [np.inf, 7.0]])
    decided, m = decide(df, AcceptConfig(rule="all"), seed=0)
    assert accepted_ids(decided) == {(0, 0), (0, 1), (1, 1)}
    assert m["accept/nonfinite"] == 2


def test_best_of_n_takes_each_prompts_maximum():
    df = frame([[0.1, 0.9, 0.5], [np.nan, -1.0, np.inf], [np.nan, np.nan]])
    decided, m = decide(df, AcceptConfig(rule="best_of_n"), seed=0)
    assert accepted_ids(decided) == {(0, 1), (1, 1)}  # prompt 2 has no finite reward: nothing
    assert decided.accept_prob.tolist() == [0, 1, 0, 0, 1, 0, 0, 0]


def test_best_of_n_breaks_ties_by_a_seeded_uniform_draw():
    df = frame([[1.0, 0.0, 1.0, 1.0], [2.0, 2.0]])
    picks = []
    for seed in range(150):
        decided, _ = decide(df, AcceptConfig(rule="best_of_n"), seed=seed)
        chosen = accepted_ids(decided)
        assert len(chosen) == 2 and chosen == accepted_ids(decide(df, AcceptConfig(rule="best_of_n"), seed=seed)[0])
        picks.append(min(chosen))
    np.testing.assert_allclose(decided.accept_prob, [1 / 3, 0, 1 / 3, 1 / 3, 0.5, 0.5])
    counts = pd.Series([i for _, i in picks]).value_counts()
    assert set(counts.index) == {0, 2, 3}  # never the lower reward, every tied one sometimes
    assert counts.min() > 25  # ~50 each: a uniform draw, not "first wins"


def test_top_fraction_local_and_global_differ():
    # prompt 0 is easy (high rewards), prompt 1 hard: local keeps some of each, global mostly prompt 0.
    df = frame([[0.9, 0.8, 0.7, 0.6], [0.3, 0.1, 0.2, 0.0]])
    local, _ = decide(df, AcceptConfig(rule="top_fraction", fraction=0.5, scope="prompt"), seed=0)
    assert accepted_ids(local) == {(0, 0), (0, 1), (1, 0), (1, 2)}
    glob, m = decide(df, AcceptConfig(rule="top_fraction", fraction=0.5, scope="global"), seed=0)
    assert accepted_ids(glob) == {(0, 0), (0, 1), (0, 2), (0, 3)}
    assert m["accept/accepted"] == 4
    # ceil, robust to float noise: 0.28 * 25 is 7.000000000000001, which must keep 7, not 8
    many, _ = decide(frame([list(range(25))]), AcceptConfig(rule="top_fraction", fraction=0.28), seed=0)
    assert accepted_ids(many) == {(0, i) for i in range(18, 25)}
    third, _ = decide(frame([list(range(10))]), AcceptConfig(rule="top_fraction", fraction=0.25), seed=0)
    assert accepted_ids(third) == {(0, 7), (0, 8), (0, 9)}  # 2.5 rounds up


def test_top_fraction_ties_at_the_cut_share_the_free_slots():
    df = frame([[5.0, 3.0, 3.0, 3.0, 1.0, np.nan]])  # 6 candidates, fraction 0.5 -> 3 slots
    cfg = AcceptConfig(rule="top_fraction", fraction=0.5)
    decided, m = decide(df, cfg, seed=0)
    np.testing.assert_allclose(decided.accept_prob, [1, 2 / 3, 2 / 3, 2 / 3, 0, 0])
    assert decided.accepted.sum() == 3 and decided.accepted[0]
    assert m["accept/expected_rate"] == pytest.approx(m["accept/rate"])
    seen = set()
    for seed in range(30):
        d, _ = decide(df, cfg, seed=seed)
        seen |= accepted_ids(d)
    assert seen == {(0, 0), (0, 1), (0, 2), (0, 3)}


# --- likelihood ratio: reward-tilted ------------------------------------------------------


def test_reward_tilted_probability_is_exp_of_reward_gap():
    df = frame([[0.0, 0.5, 1.0], [0.2, 0.4]])
    decided, m = decide(df, AcceptConfig(rule="likelihood_ratio", target="reward_tilted", beta=0.5, r_max=1.0), seed=0)
    np.testing.assert_allclose(decided.accept_prob, np.exp((np.array([0.0, 0.5, 1.0, 0.2, 0.4]) - 1.0) / 0.5))
    assert m["accept/bound_violations"] == 0 and m["accept/log_m"] == pytest.approx(2.0)
    per_prompt, _ = decide(df, AcceptConfig(rule="likelihood_ratio", beta=0.5, r_max="per_prompt"), seed=0)
    np.testing.assert_allclose(
        per_prompt.accept_prob, np.exp((np.array([0.0, 0.5, 1.0, 0.2, 0.4]) - [1, 1, 1, 0.4, 0.4]) / 0.5)
    )


def test_reward_tilted_acceptance_frequency_matches_probability():
    df = frame([[0.0, 0.5, 1.0, 0.8] * 500])
    decided, m = decide(df, AcceptConfig(rule="likelihood_ratio", beta=0.4, r_max=1.0), seed=3)
    freq = decided.groupby(decided.reward).accepted.mean()
    np.testing.assert_allclose(freq.to_numpy(), np.exp((freq.index.to_numpy() - 1.0) / 0.4), atol=0.05)
    assert m["accept/rate"] == pytest.approx(m["accept/expected_rate"], abs=0.03)


def test_beta_to_zero_reproduces_best_of_n():
    rng = np.random.default_rng(0)
    df = frame([list(rng.random(6)) for _ in range(20)])  # distinct rewards
    best, _ = decide(df, AcceptConfig(rule="best_of_n"), seed=0)
    tilted, _ = decide(df, AcceptConfig(rule="likelihood_ratio", beta=1e-9, r_max="per_prompt"), seed=1)
    assert accepted_ids(tilted) == accepted_ids(best)
    # With ties, RSO's draw-until-one picks exactly one maximum per prompt, like best_of_n.
    ties = frame([[1.0, 0.0, 1.0], [0.5, 0.5, 0.2]])
    rso, _ = decide(
        ties, AcceptConfig(rule="likelihood_ratio", beta=1e-9, r_max="per_prompt", samples_per_prompt=1), seed=0
    )
    assert rso.groupby("prompt_id").accepted.sum().tolist() == [1, 1]
    assert (rso.reward[rso.accepted] == [1.0, 0.5]).all()


@pytest.mark.parametrize("beta", [1e12, math.inf])
def test_beta_to_infinity_accepts_everything_finite(beta):
    df = frame([[0.0, -5.0, 1.0, 100.0, 0.0], [np.nan, -np.inf, np.inf, 0.3]], log_q=[-1.0] * 4 + [np.nan] + [-1.0] * 4)
    for r_max in (1.0, "per_prompt"):
        decided, m = decide(df, AcceptConfig(rule="likelihood_ratio", beta=beta, r_max=r_max), seed=0)
        assert accepted_ids(decided) == {(0, 0), (0, 1), (0, 2), (0, 3), (1, 3)}  # not the NaN log q
        assert m["accept/nonfinite"] == 4


def test_r_max_too_small_counts_violations_exactly(caplog):
    df = frame([[0.5, 1.0, 1.5, 2.0], [3.0, np.nan, 0.9, 1.0]])
    with caplog.at_level(logging.WARNING, logger="rsft_gen"):
        decided, m = decide(df, AcceptConfig(rule="likelihood_ratio", beta=1.0, r_max=1.0), seed=0)
    assert m["accept/bound_violations"] == 3  # 1.5, 2.0, 3.0 exceed r_max; 1.0 itself does not
    assert m["accept/bound_violation_fraction"] == pytest.approx(3 / 8)
    assert m["accept/exact"] == 0.0
    assert "NOT an exact sample" in caplog.text
    assert decided.accept_prob.max() == 1.0  # clipped, not above 1


def test_rso_draws_without_replacement_until_k_accepted():
    rng = np.random.default_rng(1)
    df = frame([list(rng.normal(size=8)) for _ in range(30)] + [[0.1, np.nan]])
    cfg = AcceptConfig(rule="likelihood_ratio", beta=0.5, r_max="per_prompt", samples_per_prompt=3)
    decided, _ = decide(df, cfg, seed=0)
    per_prompt = decided.groupby("prompt_id").accepted.sum()
    assert (per_prompt.iloc[:-1] == 3).all() and per_prompt.iloc[-1] == 1  # only one finite there
    # Higher rewards are accepted more often, but not only the top three.
    ranks = decided.groupby("prompt_id").reward.rank(ascending=False)
    assert ranks[decided.accepted].mean() < 3.5 and (ranks[decided.accepted] > 3).any()


# --- likelihood ratio: target model (log p stubbed) and M ---------------------------------


@pytest.fixture
def stub_target(monkeypatch):
    """Replace target-model scoring by given log p values, so M and violations are exact."""

    def install(log_p):
        monkeypatch.setattr(
            accept_target, "target_log_probs", lambda df, path, device="cpu": np.asarray(log_p, dtype=float)
        )

    return install


def test_target_model_probability_and_exact_violation_count(stub_target, caplog):
    log_p = np.log([0.5, 0.2, 0.1, 0.1, 0.1])
    log_q = np.log([0.1, 0.2, 0.3, 0.2, 0.2])
    stub_target(log_p)
    df = frame([[0.0] * 5], log_q=log_q)
    cfg = AcceptConfig(rule="likelihood_ratio", target="model", target_model="stub", log_m=math.log(2.0))
    with caplog.at_level(logging.WARNING, logger="rsft_gen"):
        decided, m = decide(df, cfg, seed=0)
    np.testing.assert_allclose(decided.accept_prob, [1.0, 0.5, 1 / 6, 0.25, 0.25])
    np.testing.assert_allclose(decided.log_p, log_p)
    assert m["accept/bound_violations"] == 1  # p/q = 5 > M = 2 only for the first
    assert m["accept/bound_violation_fraction"] == pytest.approx(0.2)
    assert "NOT an exact sample" in caplog.text


def test_target_model_nonfinite_log_probs_never_accepted(stub_target):
    n = 9
    log_p = np.array([np.nan, np.inf, -np.inf, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    log_q = np.array([0.0, 0.0, 0.0, np.nan, np.inf, -np.inf, 0.0, 0.0, 0.0])
    reward = [0.0] * 6 + [np.nan, np.inf, 0.0]
    stub_target(log_p)
    df = frame([reward], log_q=log_q)
    for log_m in (-50.0, "auto"):
        cfg = AcceptConfig(
            rule="likelihood_ratio", target="model", target_model="stub", log_m=log_m, pilot_fraction=0.01
        )
        for seed in range(20):
            decided, m = decide(df, cfg, seed=seed)
            assert not decided.accepted.iloc[: n - 1].any()
            assert decided.accept_prob.iloc[: n - 1].eq(0).all()
            assert m["accept/nonfinite"] == 8


def test_auto_log_m_comes_from_a_pilot_that_is_never_accepted(stub_target):
    rng = np.random.default_rng(0)
    n = 200
    log_q = rng.normal(-3, 1, n)
    log_p = log_q + rng.normal(0, 0.5, n)
    stub_target(log_p)
    cfg = AcceptConfig(
        rule="likelihood_ratio",
        target="model",
        target_model="stub",
        log_m="auto",
        pilot_fraction=0.1,
        log_m_margin=0.25,
    )
    decided, m = decide(frame([[0.0] * n], log_q=log_q), cfg, seed=4)
    pilot = decided.pilot.to_numpy()
    assert pilot.sum() == 20 == m["accept/pilot_samples"]
    assert m["accept/log_m"] == pytest.approx((log_p - log_q)[pilot].max() + 0.25)
    assert not decided.accepted[pilot].any() and (decided.accept_prob[pilot] == 0).all()
    excess = (log_p - log_q)[~pilot] > m["accept/log_m"]
    assert m["accept/bound_violations"] == excess.sum()
    assert m["accept/bound_violation_fraction"] == pytest.approx(excess.sum() / 180)


def test_target_log_probs_scores_token_ids_and_keeps_row_order(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rsft_gen.likelihood import token_ids_log_probs

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    eos = tok.eos_token_id
    completions = [[10, eos], [11, 12], [10, eos], [13], [11, 12]]  # repeats, as samples are
    prompts = ["1+2=", "3+4=", "1+2=", "5+6=", "1+2="]
    df = pd.DataFrame({"prompt": prompts, "token_ids": completions})
    got = accept_target.target_log_probs(df, tiny_model_dir, model=model, tokenizer=tok)
    want = [token_ids_log_probs(model, [tok(p)["input_ids"]], [c])[0] for p, c in zip(prompts, completions)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[1] != got[4]  # same completion, different prompt: scored separately
    with pytest.raises(ValueError, match="share the sampler's tokenizer"):
        accept_target.target_log_probs(df.assign(token_ids=[[10_000]] * 5), tiny_model_dir, model=model, tokenizer=tok)


# --- the registry --------------------------------------------------------------------------


def test_rules_declare_what_config_and_loop_need():
    from rsft_gen.accept_rules import RULES, get_rule
    from rsft_gen.config import CHOICES, records_log_q

    assert (
        CHOICES["accept.rule"] == tuple(RULES) == ("threshold", "best_of_n", "top_fraction", "all", "likelihood_ratio")
    )
    assert CHOICES["accept.target"] == ("reward_tilted", "model", "reward_weighted") and CHOICES["accept.scope"] == (
        "prompt",
        "global",
    )
    lr = get_rule("likelihood_ratio")
    assert lr.needs_engine_memory(AcceptConfig(target="model")) and not lr.needs_engine_memory(
        AcceptConfig(target="reward_tilted")
    )
    assert [name for name, rule in RULES.items() if rule.needs_log_q(AcceptConfig())] == ["likelihood_ratio"]
    assert records_log_q(load_recipe(None, ["accept.rule=likelihood_ratio"])) and not records_log_q(
        load_recipe(None, ["accept.rule=best_of_n"])
    )
    assert "threshold" in get_rule("threshold").keys and {"fraction", "scope"} <= set(get_rule("top_fraction").keys)
    with pytest.raises(ValueError, match="choose one of threshold, best_of_n, top_fraction, all, likelihood_ratio"):
        get_rule("best_of")


# --- recipe validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["accept.samples_per_prompt=2"], "accept.samples_per_prompt"),  # r_max is a number
        (["accept.rule=likelihood_ratio", "accept.target=reward_weighted"], "accept.target"),  # backend is hf
        (["accept.pilot_fraction=0"], "accept.pilot_fraction"),
        (["accept.target=other"], "accept.target"),
    ],
)
def test_recipe_errors_name_the_key(overrides, key):
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        load_recipe(None, overrides)
