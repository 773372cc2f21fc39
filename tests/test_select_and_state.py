"""Selection after acceptance, and the run directory's atomic state."""

import json
import os

import pandas as pd
import pytest

from rsft_gen.config import SelectConfig
from rsft_gen.select import select
from rsft_gen.state import RunState, atomic_path, write_parquet
from rsft_gen.tracking import Tracker


def decided_frame():
    return pd.DataFrame(
        {
            "prompt_id": [0, 0, 0, 0, 1, 1, 2, 2],
            "prompt": ["a"] * 4 + ["b"] * 2 + ["c"] * 2,
            "completion": ["x", "x", "y", "z", "p", "q", "r", "s"],
            "accepted": [True, True, True, True, False, False, True, False],
        }
    )


def test_dedup_removes_identical_prompt_completion_pairs():
    sft, m = select(decided_frame(), SelectConfig(dedup=True), None, seed=0)
    assert sorted(zip(sft.prompt_id, sft.completion)) == [(0, "x"), (0, "y"), (0, "z"), (2, "r")]
    assert m["select/duplicates_removed"] == 1
    assert (m["select/per_prompt_min"], m["select/per_prompt_max"]) == (0, 3)


def test_per_prompt_cap_and_no_dedup():
    sft, m = select(decided_frame(), SelectConfig(dedup=False, max_per_prompt=2), None, seed=0)
    assert sft.groupby("prompt_id").size().to_dict() == {0: 2, 2: 1}
    assert m["select/capped"] == 2


def test_difficulty_filter_drops_prompts_that_all_pass_or_all_fail():
    sft, m = select(decided_frame(), SelectConfig(difficulty_filter=True), None, seed=0)
    assert set(sft.prompt_id) == {2}  # prompt 0 all passed, prompt 1 all failed
    assert m["select/dropped_prompts_all_or_none"] == 2


def test_seed_mixing_reaches_the_requested_fraction():
    seed = pd.DataFrame({"prompt_id": range(10), "prompt": [f"s{i}" for i in range(10)], "answer": [str(i) for i in range(10)]})
    sft, m = select(decided_frame(), SelectConfig(mix_seed_fraction=0.5), seed, seed=0)
    assert (sft.source == "seed").sum() == (sft.source == "generated").sum() == 4
    assert set(sft[sft.source == "seed"].completion) <= set(seed.answer)


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "scored.parquet"
    write_parquet(target, pd.DataFrame({"a": [1]}))
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("crash mid-write")
    assert pd.read_parquet(target).a.tolist() == [1]
    assert os.listdir(tmp_path) == ["scored.parquet"]  # no temporary left behind


def test_run_state_round_trips_phases_and_metrics(tmp_path):
    s = RunState(tmp_path)
    s.complete(1, "generate", {"time/generate_s": 1.5})
    s.complete(1, "reward", {"reward/mean": 0.25})
    again = RunState(tmp_path)
    assert again.done(1, "generate") and again.done(1, "reward") and not again.done(1, "accept")
    assert again.round_metrics(1) == {"time/generate_s": 1.5, "reward/mean": 0.25}
    # metrics.jsonl is rebuilt from state.json (atomically) each time a round is logged
    tracker = Tracker(tmp_path, again)
    for r in (1, 2):
        tracker.log_round(r, {"round": r})
        again.mark_logged(r)
    assert [json.loads(x)["round"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_run_written_before_newer_keys_existed_resumes(tmp_path):
    """config.yaml of an older version lacks newer keys (here eval.correct and rewards[].executor): not a recipe change."""
    from omegaconf import OmegaConf

    from rsft_gen.config import RecipeError, load_recipe, to_dict
    from rsft_gen.run_setup import check_resume

    recipe = load_recipe("recipes/addition_tiny.yaml", [f"output_dir={tmp_path}"])
    old = to_dict(recipe)
    del old["eval"]["correct"], old["rewards"][0]["executor"]
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(old)))
    check_resume(tmp_path, recipe, allow_changes=False)
    # A real change is still refused, including one of a key the old file lacks.
    with pytest.raises(RecipeError, match="eval.correct.threshold: 1.0 -> 0.5"):
        check_resume(tmp_path, load_recipe("recipes/addition_tiny.yaml", [f"output_dir={tmp_path}", "eval.correct.threshold=0.5"]), False)
