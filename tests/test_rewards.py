"""Reward plugins: discovery (built-ins, a real installed entry point, module:function), scoring and its error
policies."""

from __future__ import annotations

import doctest
import importlib
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from reward import BUILTIN
from rsft_gen.config import RecipeError, RewardSpec
from rsft_gen.rewards import RewardError, available, load, score

MINE = [n for n in BUILTIN if n != "model_loss"]  # model_loss has its own tests


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory):
    """tests/plugin_pkg really installed with pip (into a target dir put on sys.path), as a user's package would be."""
    src = tmp_path_factory.mktemp("plugin_src") / "plugin_pkg"
    shutil.copytree("tests/plugin_pkg", src)  # the build writes build/ and *.egg-info next to the sources
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield str(target)
    sys.path.remove(str(target))


def cands(completions, **columns) -> pd.DataFrame:
    n = len(completions)
    return pd.DataFrame(
        {
            "prompt_id": columns.pop("prompt_id", list(range(n))),
            "sample_index": [0] * n,
            "prompt": ["q"] * n,
            "completion": completions,
            **columns,
        }
    )


@pytest.mark.parametrize("name", MINE)
def test_builtin_doctests(name):
    module = importlib.import_module(BUILTIN[name].split(":")[0])
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_entry_point_discovery_and_broken_plugin(plugin_path):
    found, broken = available()
    by_name = {f.name: f for f in found}
    assert set(MINE) <= set(by_name)
    assert by_name["exact_match"].source == "built-in" and by_name["exact_match"].description
    assert by_name["brevity"].source == "entry point of rsft-plugin-demo"
    assert by_name["brevity"].description == "1 / (1 + words): shorter completions score higher."
    assert "broken_plugin" in broken and "a_module_that_does_not_exist" in broken["broken_plugin"]
    assert load("brevity")(["q"], ["one two three"]) == [0.25]
    with pytest.raises(RecipeError, match="broken_plugin.*failed to import"):
        load("broken_plugin")
    # the CLI lists it too, and reports the broken one by name without failing
    env_path = plugin_path + ":" + ":".join(p for p in sys.path if p)
    out = subprocess.run(
        [sys.executable, "-m", "rsft_gen.cli", "rewards"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    assert "brevity" in out and "entry point of rsft-plugin-demo" in out and "code_exec" in out
    assert "broken_plugin" in out and "FAILED TO LOAD" in out


def test_module_function_and_unknown_names():
    assert load("reward.length:length") is load("length")
    with pytest.raises(RecipeError, match="not found; available: .*exact_match"):
        load("no_such_reward")
    with pytest.raises(RecipeError, match="could not be imported"):
        load("no_such_pkg.mod:fn")


def test_score_weights_columns_and_group_ids():
    df = cands(["the answer is 3", "4", "3"], answer=["3", "3", "3"], prompt_id=[7, 7, 7])
    seen = {}

    def spy(prompts, completions, answer, group_ids, **kw):
        seen.update(group_ids=group_ids, kw=kw)
        return [None, 1.0, 2.0]

    sys.modules[__name__].spy = spy
    specs = [
        RewardSpec(name="exact_match", weight=2.0, kwargs={"extract": "last_number"}),
        RewardSpec(name=f"{__name__}:spy", kwargs={"alpha": 1}),
    ]
    out, counts = score(df, specs)
    assert out["reward/exact_match"].tolist() == [1.0, 0.0, 1.0]
    assert seen == {"group_ids": [7, 7, 7], "kw": {"alpha": 1}}
    assert out["reward"].tolist() == [2.0, 1.0, 4.0]  # None is no opinion: only the weighted exact_match counts
    assert counts[f"reward/{__name__}:spy/none"] == 1


def _bad_len(prompts, completions, **_):
    return [1.0]


def _nan_at_2(prompts, completions, **_):
    return [0.5, 1.0, float("nan"), "x"]


def _raises_on_boom(prompts, completions, **_):
    if any("boom" in c for c in completions):
        raise ValueError("cannot score boom")
    return [1.0] * len(completions)


@pytest.mark.parametrize(
    "fn, message",
    [
        ("_bad_len", r"reward 'tests.test_rewards:_bad_len' returned list of length 1 for 4 completions"),
        ("_nan_at_2", r"returned nan for sample 2 \(prompt_id 2, sample_index 0\) \(and 1 more samples\)"),
        (
            "_raises_on_boom",
            r"raised ValueError: cannot score boom; sample 3 \(prompt_id 3, sample_index 0\) raises on its own",
        ),
    ],
)
def test_on_error_raise_names_reward_and_sample(fn, message):
    df = cands(["a", "b", "c", "boom"])
    with pytest.raises(RewardError, match=message):
        score(df, [RewardSpec(name=f"tests.test_rewards:{fn}")])


def test_on_error_zero_and_skip_replace_and_count():
    df = cands(["a", "b", "c", "boom"])
    out, counts = score(df, [RewardSpec(name="tests.test_rewards:_nan_at_2", on_error="zero")])
    assert out["reward/tests.test_rewards:_nan_at_2"].tolist() == [0.5, 1.0, 0.0, 0.0]
    assert counts["reward/tests.test_rewards:_nan_at_2/errors"] == 2
    out, counts = score(df, [RewardSpec(name="tests.test_rewards:_nan_at_2", on_error="skip")])
    assert np.isnan(out["reward"].iloc[2]) and np.isnan(out["reward"].iloc[3]) and out["reward"].iloc[0] == 0.5
    assert counts["reward/tests.test_rewards:_nan_at_2/none"] == 2
    out, counts = score(
        df,
        [
            RewardSpec(name="tests.test_rewards:_raises_on_boom", on_error="zero"),
            RewardSpec(name="length", kwargs={"target": 0, "max_length": 10}),
        ],
    )
    assert counts["reward/tests.test_rewards:_raises_on_boom/errors"] == 4  # a batch call fails as a whole
    assert out["reward"].tolist() == [-0.1, -0.1, -0.1, -0.4]
    with pytest.raises(RecipeError, match="same names as prompt-set columns"):
        score(cands(["a"], answer=["a"]), [RewardSpec(name="exact_match", kwargs={"answer": "x"})])


# ---- built-ins on realistic inputs -------------------------------------------------------------

GSM8K = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
    "in April and May.\n#### 72"
)


def test_exact_match_and_math_on_real_answers():
    em = load("exact_match")
    assert em(
        ["q"] * 3, [GSM8K, GSM8K.replace("#### 72", "#### 73"), "The answer is 72."], answer=["72"] * 3, extract="gsm8k"
    ) == [1.0, 0.0, 0.0]
    assert em(["q"], ["so we get $\\boxed{\\frac{3}{4}}$."], answer=["\\frac{3}{4}"], extract="boxed") == [1.0]
    m = load("math")
    completions = [
        "Thus $x = \\boxed{\\frac{3}{4}}$.",
        "The answer is $\\boxed{0.75}$",
        "$\\boxed{\\{1, 2\\}}$",
        "We get $\\boxed{3/5}$",
    ]
    assert m(["q"] * 4, completions, answer=["\\frac{3}{4}", "3/4", "\\{2, 1\\}", "0.75"]) == [1.0, 1.0, 1.0, 0.0]


def test_format_length_span_f1():
    r1 = "<think>48/2 = 24, 48 + 24 = 72</think>\n<answer>72</answer>"
    assert load("format")(["q"] * 3, [r1, "<answer>72</answer><think>x</think>", "72"], tags=["think", "answer"]) == [
        1.0,
        0.0,
        0.0,
    ]
    assert load("format")(["q"] * 2, [r1, "72"], pattern=r"<think>.*</think>\s*<answer>\d+</answer>") == [1.0, 0.0]
    assert load("length")(["q"] * 2, [r1, r1 * 10], target=100, max_length=300) == [0.0, -1.0]
    ner = "PER: Marie Curie\nLOC: Warsaw\nLOC: Paris"
    got = load("span_f1")(
        ["q"] * 2, [ner, "LOC: Paris"], answer=[["Warsaw", "Paris", "Sorbonne"]] * 2, pattern=r"LOC: (.+)"
    )
    assert got == pytest.approx([0.8, 0.5])


def test_majority_vote_groups_and_ties():
    completions = ["... so 72", "I get 72.", "it is 70", "#### 72", "no idea", "5", "6"]
    out = load("majority_vote")(["q"] * 7, completions, group_ids=[0, 0, 0, 0, 0, 1, 1])
    assert out == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    out = load("majority_vote")(["q"] * 7, completions, group_ids=[0, 0, 0, 0, 0, 1, 1], ties="none", min_agreement=0.5)
    assert out == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_reward_model_batched_on_tiny_classifier(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.num_labels = 2
    torch.manual_seed(0)
    LlamaForSequenceClassification(cfg).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)
    prompts = ["12+30=", "5+5=", "1+1=", "7+8="]
    completions = ["42", "10", "3", "15 because seven plus eight"]
    rm = load("reward_model")
    batched = rm(prompts, completions, model=str(tmp_path), batch_size=3, input="concat")
    single = [rm([p], [c], model=str(tmp_path), batch_size=1, input="concat")[0] for p, c in zip(prompts, completions)]
    assert batched == pytest.approx(single, abs=1e-4)  # padding in a batch must not change a score
    probs = rm(prompts, completions, model=str(tmp_path), output="prob", input="concat")
    assert all(0 < p < 1 for p in probs) and len(set(np.round(batched, 6))) == 4


def test_code_exec_in_the_loop_frame():
    tests = ["assert fib(0) == 0", "assert fib(1) == 1", "assert fib(10) == 55"]
    good = (
        "Here is my solution:\n```python\ndef fib(n):\n    a, b = 0, 1\n"
        "    for _ in range(n):\n        a, b = b, a + b\n    return a\n```"
    )
    off_by_one = "```python\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2) + (n == 10)\n```"
    df = cands(
        [good, off_by_one, "import os\nos.system('echo hi')", "no tests here"],
        tests=[tests, tests, tests, []],
        prompt_id=[0, 0, 0, 1],
    )
    out, counts = score(df, [RewardSpec(name="code_exec", kwargs={"timeout_s": 2})])
    got = out["reward/code_exec"].tolist()
    assert got[:3] == pytest.approx([1.0, 2 / 3, 0.0]) and np.isnan(got[3])
    assert counts["reward/code_exec/none"] == 1
