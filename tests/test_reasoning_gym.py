"""data.task: reasoning_gym and the reasoning_gym reward: disjoint splits, weighted mixes, the task's own verifier."""

from __future__ import annotations

import json

import pytest
from scipy import stats

from reward.reasoning_gym import reasoning_gym
from rsft_gen.config import RecipeError, load_recipe
from rsft_gen.data import make_task
from rsft_gen.data_reasoning_gym import parse_specs, split_seed

pytest.importorskip("reasoning_gym")
CHAIN = "{name: chain_sum, config: {min_terms: 2, max_terms: 2, max_digits: 2}}"


def task_data(tasks: str, train=300, eval_=100, seed_n=20, seed=0, extra=()):
    r = load_recipe(
        None,
        [
            "data.task=reasoning_gym",
            f"data.tasks={tasks}",
            f"data.train_prompts={train}",
            f"data.eval_prompts={eval_}",
            f"seed={seed}",
            *extra,
        ],
    )
    return make_task(r.data, seed_n, r.seed)


def test_splits_are_disjoint_and_reproducible():
    td = task_data(f"[{CHAIN}]")
    assert (len(td.train), len(td.eval), len(td.seed_sft)) == (300, 100, 20)
    assert not set(td.eval.question) & set(td.train.question)
    assert not set(td.eval.question) & set(td.seed_sft.question)
    again = task_data(f"[{CHAIN}]")
    assert td.train.equals(again.train) and td.eval.equals(again.eval)
    other = task_data(f"[{CHAIN}]", seed=1)
    assert list(other.eval.question) != list(td.eval.question)
    seeds = {split_seed(0, s, 0) for s in ("eval", "train", "seed_sft")}
    assert len(seeds) == 3


def test_every_row_keeps_what_its_verifier_needs():
    td = task_data(f"[{CHAIN}, leg_counting]", train=40, eval_=20, extra=["data.prompt_suffix=' Answer:'"])
    for df in (td.train, td.eval):
        assert df.prompt.str.endswith(" Answer:").all()
        entries = [json.loads(e) for e in df.rg_entry]
        assert [e["answer"] for e in entries] == list(df.answer)
        # The oracle answer scores 1.0 under each task's own score_answer; a wrong one does not.
        assert reasoning_gym(
            None,
            list(df.answer),
            rg_task=list(df.rg_task),
            rg_config=list(df.rg_config),
            rg_entry=list(df.rg_entry),
            extract="strip",
        ) == [1.0] * len(df)
        wrong = [str(int(a) + 1) for a in df.answer]
        assert (
            max(
                reasoning_gym(
                    None,
                    wrong,
                    rg_task=list(df.rg_task),
                    rg_config=list(df.rg_config),
                    rg_entry=list(df.rg_entry),
                    extract="strip",
                )
            )
            < 1.0
        )


def test_weighted_mix_follows_the_weights():
    td = task_data("[{name: chain_sum, weight: 3}, {name: leg_counting, weight: 1}]", train=800, eval_=50)
    n_chain = int((td.train.rg_task == "chain_sum").sum())
    assert stats.binomtest(n_chain, len(td.train), 0.75).pvalue > 0.01
    # Power: the same count is far from an equal mix.
    assert stats.binomtest(n_chain, len(td.train), 0.5).pvalue < 1e-6


def test_reward_extraction_modes_and_chat_form():
    entry = json.dumps({"question": "q", "answer": "12", "metadata": {}})
    common = dict(rg_task=["chain_sum"] * 4, rg_config=["{}"] * 4, rg_entry=[entry] * 4)
    completions = ["I think <answer>12</answer>", "12 is it\nso 13", "the sum is 12", "\\boxed{12}"]
    assert reasoning_gym(None, completions, **common, extract="last_number") == [1.0, 0.0, 1.0, 1.0]
    assert reasoning_gym(None, completions, **common, extract="boxed") == [0.0, 0.0, 0.0, 1.0]
    chat = [[{"role": "assistant", "content": c}] for c in completions]
    assert reasoning_gym(None, chat, **common, extract="last_number") == [1.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "tasks, message",
    [
        (
            "[chain_summ]",
            "recipe key 'data.tasks[0].name' is 'chain_summ', which is not a reasoning-gym task. "
            "Did you mean chain_sum",
        ),
        (
            "[{name: chain_sum, config: {max_digit: 2}}]",
            "recipe key 'data.tasks[0].config.max_digit': task 'chain_sum' has no option 'max_digit'. "
            "Did you mean 'max_digits'?",
        ),
        ("[{name: chain_sum, weight: 0}]", "recipe key 'data.tasks[0].weight' is 0.0; weights must be positive."),
        ("[{name: chain_sum, wieght: 2}]", "recipe key 'data.tasks[0]' has unknown keys ['wieght']"),
    ],
)
def test_bad_task_specs_name_the_key(tasks, message):
    with pytest.raises(RecipeError) as e:
        task_data(tasks, train=5, eval_=5)
    assert message in str(e.value)


def test_empty_task_list_is_an_error():
    with pytest.raises(RecipeError, match="recipe key 'data.tasks' is empty"):
        parse_specs([])


def test_too_small_a_task_space_says_so():
    tiny = "[{name: chain_sum, config: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}]"
    with pytest.raises(RecipeError, match="questions not in the held-out set"):
        task_data(tiny, train=400, eval_=100)
