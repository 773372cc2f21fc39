"""End to end: the first two rounds of the default recipe on the tiny model, on CPU (~1.5 min)."""

import json

import pandas as pd
import pytest

from rsft_gen.loop import run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_round_run(tmp_path_factory):
    from rsft_gen.config import load_recipe

    out = tmp_path_factory.mktemp("e2e") / "run"
    recipe = load_recipe(
        "recipes/addition_tiny.yaml",
        # The default recipe's sizes: smaller rounds (e.g. 2000 prompts x 8) barely move a 10-20% start.
        [f"output_dir={out}", "rounds=2", "tracking.wandb.mode=disabled"],
    )
    run(recipe)
    return out, recipe


def test_run_directory_has_the_documented_layout(two_round_run):
    out, recipe = two_round_run
    for name in ("config.yaml", "state.json", "metrics.jsonl", "data/train.parquet", "data/eval.parquet"):
        assert (out / name).exists(), name
    for r in (1, 2):
        rd = out / f"round_{r:02d}"
        cands = pd.read_parquet(rd / "candidates.parquet")
        assert len(cands) == recipe.data.train_prompts * recipe.generate.n
        assert {"prompt_id", "completion", "num_tokens", "log_q"} <= set(cands.columns)
        scored = pd.read_parquet(rd / "decided.parquet")  # the reward phase's scored.parquet + the accept decisions
        assert {"reward", "accept_prob", "accepted"} <= set(scored.columns)
        assert not {"accept_prob", "accepted"} & set(pd.read_parquet(rd / "scored.parquet").columns)  # left as written
        accepted = pd.read_parquet(rd / "accepted.parquet")
        # Only correct answers were accepted (as numbers: exact_match takes "+78" for 78), deduplicated per prompt.
        joined = accepted.merge(pd.read_parquet(out / "data/train.parquet"), on="prompt_id")
        assert (pd.to_numeric(joined.completion.str.strip()) == pd.to_numeric(joined.answer)).all()
        assert not accepted.duplicated(["prompt_id", "completion"]).any()
        assert (rd / "model" / "config.json").exists()
        assert "eval/accuracy" in json.loads((rd / "eval.json").read_text())
    assert json.loads((out / "state.json").read_text())["finished"] is True


def test_metrics_have_one_line_per_round_with_phase_timings(two_round_run):
    out, _ = two_round_run
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [0, 1, 2]
    for rec in lines[1:]:
        for key in (
            "eval/accuracy",
            "accept/rate",
            "select/sft_examples",
            "time/generate_s",
            "time/reward_s",
            "time/train_s",
            "time/eval_s",
            "time/round_s",
        ):
            assert key in rec, key
        assert rec["time/round_s"] >= rec["time/train_s"] > 0


def test_accuracy_goes_up_over_the_rounds(two_round_run):
    out, _ = two_round_run
    acc = [json.loads(x)["eval/accuracy"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert acc[2] > acc[0] + 0.10, acc


def test_rerunning_a_finished_run_does_nothing_and_says_so(two_round_run, capsys):
    out, recipe = two_round_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    run(recipe)
    assert "already complete" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
