"""TRL's own reward functions, unchanged, through a chat recipe; the keyword contract; kwargs checked at load time.

.venv/bin/python -m pytest -q tests/test_trl_rewards.py
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields

import pandas as pd
import pytest

from rsft_gen import run_setup
from rsft_gen.config import RecipeError, RewardSpec, load_recipe
from rsft_gen.generate import Candidate
from rsft_gen.loop import run
from rsft_gen.prompts import MESSAGES
from rsft_gen.reward_call import HIDDEN
from rsft_gen.rewards import load, score
from tests.conftest import chat_file_overrides

trl_rewards = pytest.importorskip("trl.rewards")
SEEN: dict = {}
LOGGER = f"{__name__}:logging_reward"


def logging_reward(completions, trainer_state, log_metric, log_extra, **kwargs):
    """Uses TRL's hooks: logs the round it is called in and one extra column."""
    SEEN.setdefault("states", []).append(trainer_state)
    SEEN["kwargs"] = sorted(kwargs)
    log_metric("round", trainer_state.global_step)
    log_metric("chars", sum(len(c[0]["content"]) for c in completions) / len(completions))
    log_extra("chars", [len(c[0]["content"]) for c in completions])
    return [1.0] * len(completions)


def typed_reward(prompts, completions, answer, scale: float = 1.0):
    """No **kwargs: gets only what it names; its kwargs are checked."""
    return [scale * (c == a) for c, a in zip(completions, answer)]


def chat_rows(n: int = 24) -> list[dict]:
    """Reference completions the dataset backend turns into candidates: right or wrong, with or without <think>."""
    rows = []
    for i in range(n):
        a, b = i % 5, i // 5
        answer = a + b + (i % 3 == 2)  # every third one is wrong
        think = "<think>add them</think>\n" if i % 2 == 0 else ""
        rows.append(
            {"q": f"{a}+{b}=", "a": f"{think}so \\boxed{{{answer}}}" + " padding" * (i % 4), "solution": f"${a + b}$"}
        )
    return rows


def test_trl_rewards_run_unchanged_through_a_chat_recipe(chat_model_dir, tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in chat_rows()))
    rewards = (
        "[{name: 'trl.rewards:accuracy_reward'}, {name: 'trl.rewards:think_format_reward', weight: 0.5}, "
        "{name: 'trl.rewards:get_soft_overlong_punishment', factory: true, "
        "kwargs: {max_completion_len: 40, soft_punish_cache: 20}}, {name: '" + LOGGER + "', weight: 0}]"
    )
    recipe = load_recipe(
        "recipes/addition_tiny.yaml",
        [
            *chat_file_overrides(chat_model_dir, tmp_path / "run", data),
            "data.train_prompts=20",
            "data.eval_prompts=4",
            "seed_sft.n=0",
            "generate.backend=dataset",
            "generate.max_new_tokens=4",
            f"rewards={rewards}",
            "accept.rule=all",
            "select.max_per_prompt=null",
            "train.epochs=1",
            "tracking.wandb.mode=disabled",
        ],
    )
    SEEN.clear()
    run_dir = run(recipe)
    scored = pd.read_parquet(run_dir / "round_01" / "scored.parquet")
    assert len(scored) == 20
    # What TRL's GRPOTrainer hands them for a conversational data set: message lists.
    prompts = [json.loads(m) for m in scored[MESSAGES]]
    train = pd.read_parquet(run_dir / "data" / "train.parquet")  # written before rendering
    raw = dict(zip(train.prompt_id, train.prompt))
    assert prompts[0] == [{"role": "system", "content": "Add."}, {"role": "user", "content": raw[scored.prompt_id[0]]}]
    assert scored.prompt[0].startswith("<s><system>Add.\n<user>")  # the rendered text is what the model saw
    completions = [[{"role": "assistant", "content": c}] for c in scored.completion]
    ids = [list(map(int, t)) for t in scored.token_ids]
    want_acc = trl_rewards.accuracy_reward(completions, scored.solution.tolist())
    want_think = trl_rewards.think_format_reward(completions)
    want_long = trl_rewards.get_soft_overlong_punishment(max_completion_len=40, soft_punish_cache=20)(ids)
    assert scored["reward/trl.rewards:accuracy_reward"].tolist() == want_acc
    assert scored["reward/trl.rewards:think_format_reward"].tolist() == want_think
    assert scored["reward/trl.rewards:get_soft_overlong_punishment"].tolist() == pytest.approx(want_long)
    # The values are not all alike, so the comparison above means something.
    assert set(want_acc) == {0.0, 1.0} and set(want_think) == {0.0, 1.0} and len(set(want_long)) > 2
    # accuracy_reward's log_extra columns and logging_reward's metrics land under reward/<name>/...
    assert scored["reward/trl.rewards:accuracy_reward/solution"].tolist() == scored.solution.tolist()
    assert scored[f"reward/{LOGGER}/chars"].tolist() == scored.completion.str.len().tolist()
    r1 = next(
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["round"] == 1
    )
    assert r1[f"reward/{LOGGER}/round"] == 1.0
    assert r1[f"reward/{LOGGER}/chars"] == pytest.approx(scored.completion.str.len().mean())
    assert SEEN["states"][0].phase == "reward" and SEEN["states"][0].max_steps == 1
    # **kwargs gets what TRL passes: prompts, completion_ids, each column, group_ids (hooks only by name)
    assert {"prompts", "completion_ids", "solution", "answer", "group_ids"} <= set(SEEN["kwargs"])
    assert not {"log_q", "token_ids", "prompt", MESSAGES, "sample_index"} & set(SEEN["kwargs"])
    want = sum(w * v for w, v in zip([1.0, 0.5, 1.0], [want_acc[0], want_think[0], want_long[0]]))
    assert scored.reward[0] == pytest.approx(want)


def test_plain_and_typed_functions_get_what_they_name():
    df = pd.DataFrame(
        {
            "prompt_id": [0, 0, 1],
            "sample_index": [0, 1, 0],
            "prompt": ["p", "p", "q"],
            "completion": ["4", "5", "6"],
            "answer": ["4", "4", "6"],
            "token_ids": [[1], [2], [3]],
            "log_q": [0.0] * 3,
        }
    )
    out, _ = score(df, [RewardSpec(name=f"{__name__}:typed_reward", kwargs={"scale": 2.0})])
    assert out[f"reward/{__name__}:typed_reward"].tolist() == [2.0, 0.0, 2.0]
    with pytest.raises(RecipeError, match="needs 'answer', which is neither a prompt-set column"):
        score(df.drop(columns="answer"), [RewardSpec(name=f"{__name__}:typed_reward")])


def test_hidden_columns_come_from_the_candidate_fields():
    assert {f.name for f in fields(Candidate)} | {"prompt", MESSAGES} == set(HIDDEN)


def test_kwargs_are_checked_when_the_run_starts(fast_recipe, caplog):
    with pytest.raises(
        RecipeError, match=r"reward 'exact_match' .* has no parameter 'extrct'.* Did you mean 'extract'\?"
    ):
        run_setup.check_rewards(fast_recipe("rewards=[{name: exact_match, kwargs: {extrct: last_number}}]"))
    for name, typo, fix in [
        ("format", "tag", "tags"),
        ("length", "max_len", "max_length"),
        ("majority_vote", "tie", "ties"),
        ("span_f1", "colum", "column"),
        ("code_exec", "timeout", "timeout_s"),
        ("math", "float_round", "float_rounding"),
    ]:
        with pytest.raises(RecipeError, match=f"Did you mean '{fix}'"):
            load(RewardSpec(name=name, kwargs={typo: 1}))
    with pytest.raises(RecipeError, match="set by rsft-gen"):
        load(RewardSpec(name="exact_match", kwargs={"completions": []}))
    # A function taking **kwargs cannot be checked; the log says so.
    with caplog.at_level(logging.INFO, logger="rsft_gen.reward_call"):
        load(RewardSpec(name="trl.rewards:think_format_reward", kwargs={"anything": 1}))
    assert "passed unchecked" in caplog.text
    # A factory: its kwargs are bound to its signature; used without factory: true, the error says what to set.
    with pytest.raises(RecipeError, match="Did you mean 'soft_punish_cache'"):
        load(
            RewardSpec(
                name="trl.rewards:get_soft_overlong_punishment",
                factory=True,
                kwargs={"max_completion_len": 8, "soft_punish_cach": 2},
            )
        )
    with pytest.raises(RecipeError, match="set factory: true"):
        load(
            RewardSpec(
                name="trl.rewards:get_soft_overlong_punishment",
                kwargs={"max_completion_len": 8, "soft_punish_cache": 2},
            )
        )
    assert load(
        RewardSpec(
            name="trl.rewards:get_soft_overlong_punishment",
            factory=True,
            kwargs={"max_completion_len": 8, "soft_punish_cache": 2},
        )
    )(completion_ids=[[1] * 7]) == [-0.5]


def test_builtins_read_chat_form():
    chat = [[{"role": "assistant", "content": "<think>x</think><answer>12</answer>"}]]
    prompt = [[{"role": "user", "content": "q"}]]
    assert load("exact_match")(prompts=prompt, completions=chat, answer=["12"], extract="answer_tags") == [1.0]
    assert load("format")(prompts=prompt, completions=chat, tags=["think", "answer"]) == [1.0]
    assert load("majority_vote")(prompts=prompt * 2, completions=chat * 2, group_ids=[0, 0], extract="answer_tags") == [
        1.0,
        1.0,
    ]
