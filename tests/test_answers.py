"""One definition of "correct" (eval.correct) and "the answer" (eval.answer), read by eval, maj@k, dedup and the
difficulty filter; maj@k on chain-of-thought text votes on the final answer, not on the whole text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reward.exact_match import extract_answer
from rsft_gen.answers import answer_rule, correct_rule
from rsft_gen.config import RecipeError, SelectConfig, load_recipe
from rsft_gen.metrics import pass_at_k, sampled_metrics
from rsft_gen.select import select

MATH = "recipes/math_qwen2.5_1.5b.yaml"
MBPP = "recipes/mbpp_code_qwen2.5_coder_1.5b.yaml"
TINY = "recipes/addition_tiny.yaml"


def cot(rng: np.random.Generator, answer: int) -> str:
    """A chain-of-thought completion: its wording varies, the final \\boxed{} answer is `answer`."""
    steps = " ".join(f"Step {i}: {rng.integers(1000)} carried." for i in range(rng.integers(2, 6)))
    return f"Let me think. {steps} So the answer is $\\boxed{{{answer}}}$."


def test_recipes_resolve_correct_and_answer():
    math, mbpp, tiny = (load_recipe(p) for p in (MATH, MBPP, TINY))
    assert answer_rule(math).extract == "boxed" and correct_rule(math).column == "reward/math"
    assert answer_rule(mbpp) is None and correct_rule(mbpp).column == "reward/code_exec"
    assert answer_rule(tiny).extract == "strip"  # auto: the exact_match reward's own extraction, as before
    assert correct_rule(tiny).threshold == 1.0 and correct_rule(tiny).spec.name == "exact_match"
    two = load_recipe(
        TINY,
        [
            "rewards=[{name: exact_match}, {name: exact_match, kwargs: {extract: last_number}}]",
            "eval.correct.reward=exact_match#2",
            "eval.answer.extract=auto",
        ],
    )
    assert correct_rule(two).column == "reward/exact_match#2" and answer_rule(two).extract == "strip"
    mv = load_recipe(TINY, ["rewards=[{name: length}, {name: majority_vote}]"])
    assert answer_rule(mv).extract == "last_number"  # majority_vote's default
    assert answer_rule(load_recipe(TINY, ["rewards=[{name: length}]"])) is None


@pytest.mark.parametrize(
    "override, key",
    [
        ("eval.correct.reward=exact_mach", "eval.correct.reward' is 'exact_mach'.*Did you mean 'exact_match'"),
        ("eval.answer.extract=boxd", "eval.answer.extract' is 'boxd'"),
        ("eval.answer.extract=regex", "eval.answer.pattern' is not set"),
    ],
)
def test_bad_correct_and_answer_keys_are_named(override, key):
    with pytest.raises(RecipeError, match=key):
        load_recipe(TINY, [override])


def test_dedup_by_answer_needs_an_answer():
    with pytest.raises(RecipeError, match="select.dedup_key' is 'answer', but the recipe defines no answer"):
        load_recipe(MBPP, ["select.dedup_key=answer"])


def test_maj_at_k_votes_on_the_final_answer_of_chain_of_thought():
    """Each prompt: 2 of 5 samples reach the right answer (7) in different words, 3 reach distinct wrong ones."""
    rng = np.random.default_rng(0)
    rows = []
    for pid in range(200):
        answers = [7, 7, 5, 6, 8]
        rng.shuffle(answers)
        rows += [(pid, i, cot(rng, a), a == 7) for i, a in enumerate(answers)]
    df = pd.DataFrame(rows, columns=["prompt_id", "sample_index", "completion", "correct"])
    assert df.completion.nunique() == len(df)  # every text differs: voting on whole texts is a five-way tie
    rule = answer_rule(load_recipe(MATH))
    by_answer = sampled_metrics(df, ks=[1, 5], seed=0, extract=rule.extract, pattern=rule.pattern)
    by_text = sampled_metrics(df, ks=[1, 5], seed=0, extract="strip")
    assert by_answer["eval/pass@1"] == pytest.approx(pass_at_k(5, 2, 1)) == pytest.approx(0.4)
    assert by_answer["eval/maj@5"] == 1.0  # 7 holds two votes against one each
    # Voting on texts is a seeded draw among five: pass@1 under another name (200 prompts: 0.4 +- 0.035).
    assert abs(by_text["eval/maj@5"] - 0.4) < 0.1
    # With no answer defined, maj@k is not reported at all.
    none = sampled_metrics(df, ks=[1, 5], seed=0, extract=None)
    assert "eval/maj@5" not in none and none["eval/pass@5"] == 1.0


def test_evaluate_reports_no_maj_without_an_answer(tiny_model_dir, fast_recipe):
    from rsft_gen.data import make_task
    from rsft_gen.evaluate import evaluate
    from rsft_gen.generate_hf import HFGenerator

    recipe = fast_recipe("eval.n=2", "eval.k=[1,2]")
    prompts = make_task(recipe.data, 0, 0).eval.head(8)
    gen = HFGenerator(tiny_model_dir)
    with_answer, _ = evaluate(gen, prompts, recipe, seed=0)
    without, greedy = evaluate(
        gen, prompts, fast_recipe("eval.n=2", "eval.k=[1,2]", "eval.answer.extract=none"), seed=0
    )
    assert "eval/maj@2" in with_answer and "eval/maj@2" not in without
    assert without["eval/pass@2"] == with_answer["eval/pass@2"]  # the same samples, the same correctness
    # eval.correct decides with the reward's own value, not its weighted sum (weight 0 would make that 0 everywhere).
    from reward.length import length

    spec = "rewards=[{name: exact_match}, {name: length, weight: 0.0, kwargs: {target: 2, max_length: 6}}]"
    _, greedy = evaluate(
        gen, prompts, fast_recipe(spec, "eval.correct.reward=length", "eval.correct.threshold=-0.5"), seed=0
    )
    want = np.array(length(None, greedy.completion.tolist(), target=2, max_length=6)) >= -0.5
    assert greedy["correct"].tolist() == want.tolist()


def decided() -> pd.DataFrame:
    texts = ["so 12", "it is 12.", "12", "so 13", "x", "y", "14 it is", "14!"]
    return pd.DataFrame(
        {
            "prompt_id": [0, 0, 0, 0, 1, 1, 2, 2],
            "prompt": ["a"] * 4 + ["b"] * 2 + ["c"] * 2,
            "completion": texts,
            "reward/exact_match": [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0],
            "accepted": [True, True, True, False, True, False, True, True],  # e.g. a rule that also takes wrong ones
        }
    )


def test_select_uses_the_recipe_answer_and_correctness():
    recipe = load_recipe(
        TINY, ["rewards=[{name: exact_match, kwargs: {extract: last_number}}]", "select.dedup_key=answer"]
    )
    sft, m = select(decided(), recipe.select, None, seed=0, correct=correct_rule(recipe), answer=answer_rule(recipe))
    assert sorted(zip(sft.prompt_id, sft.completion)) == [
        (0, "so 12"),
        (1, "x"),
        (2, "14 it is"),
    ]  # one per last number
    boxed = load_recipe(TINY, ["eval.answer.extract=regex", "eval.answer.pattern=(\\d+)!", "select.dedup_key=answer"])
    sft, _ = select(decided(), boxed.select, None, seed=0, answer=answer_rule(boxed))
    assert sorted(zip(sft.prompt_id, sft.completion))[-2:] == [(2, "14 it is"), (2, "14!")]  # no answer: its own text
    # The difficulty filter reads eval.correct, not `accepted`: prompt 1 (all wrong) and 2 (all right) go.
    sft, m = select(
        decided(), SelectConfig(dedup=False, difficulty_filter=True), None, seed=0, correct=correct_rule(recipe)
    )
    assert set(sft.prompt_id) == {0} and m["select/dropped_prompts_all_or_none"] == 2


def test_new_extraction_kinds():
    assert extract_answer("<answer>3</answer> then <answer> 41.0 </answer>", "answer_tags") == "41"
    assert extract_answer("no tags", "answer_tags") is None
    assert extract_answer("reasoning\n\n  Paris  \n", "last_line") == "Paris"
    assert extract_answer("  \n", "last_line") is None
