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
    seed = pd.DataFrame(
        {"prompt_id": range(10), "prompt": [f"s{i}" for i in range(10)], "answer": [str(i) for i in range(10)]}
    )
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
    """config.yaml of an older version lacks newer keys (eval.correct, rewards[].executor): not a recipe change."""
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
        check_resume(
            tmp_path,
            load_recipe("recipes/addition_tiny.yaml", [f"output_dir={tmp_path}", "eval.correct.threshold=0.5"]),
            False,
        )


def test_run_state_decides_which_checkpoint_each_round_uses(tmp_path):
    from rsft_gen.state import MissingCheckpointError, round_dir

    s = RunState(tmp_path)
    built = []
    base = lambda: built.append(1) or "BASE"  # noqa: E731  (built only when round 0 has no model of its own)
    assert s.model_of(0, "BASE") == "BASE" and s.trained_rounds() == []
    (round_dir(tmp_path, 1) / "model").mkdir(parents=True)
    s.carry(2, s.model_of(1, base))  # round 2 accepted nothing: it keeps round 1's model
    assert RunState(tmp_path).model_of(2, base) == str(tmp_path / "round_01" / "model") and built == []
    assert s.trained_rounds() == [1, 2]
    with pytest.raises(MissingCheckpointError, match="round 3 of .* has no trained model; rounds with one: 0, 1, 2"):
        s.model_of(3, base)
    # A trained round whose model/ is gone is redone from its train phase, and so is every later round.
    for r in (1, 3):
        for phase in ("generate", "reward", "accept", "select", "train", "eval"):
            s.mark(r, phase)
    s.mark_logged(1)
    (round_dir(tmp_path, 1) / "model").rmdir()
    s.forget_missing_checkpoints()
    again = RunState(tmp_path)
    assert (
        again.data["completed"] == {"1": ["generate", "reward", "accept", "select"]} and again.logged_rounds() == set()
    )


def test_a_run_from_before_the_select_phase_resumes_after_its_accept(tmp_path):
    """Its accept phase also selected and wrote no decided.parquet: select counts as done."""
    (tmp_path / "state.json").write_text(json.dumps({"completed": {"1": ["generate", "reward", "accept", "train"]}}))
    s = RunState(tmp_path)
    assert s.done(1, "select") and s.data["completed"]["1"] == ["generate", "reward", "accept", "select", "train"]
    (tmp_path / "round_02").mkdir()
    write_parquet(tmp_path / "round_02" / "decided.parquet", decided_frame())  # a new-style accept: select still to do
    (tmp_path / "state.json").write_text(json.dumps({"completed": {"2": ["generate", "reward", "accept"]}}))
    assert not RunState(tmp_path).done(2, "select")


def test_seeds_differ_by_stage_round_and_run():
    from rsft_gen.seeds import STAGES, derive

    assert derive(0, "accept", 1) != derive(0, "select", 1)  # accept and select draw independently
    assert derive(1, "train", 0) != derive(0, "train", 1)  # `seed + round` gave these the same seed
    seeds = {derive(s, stage, r, i) for s in range(3) for stage in STAGES for r in range(3) for i in range(3)}
    assert len(seeds) == 3 * len(STAGES) * 27 // 3 and all(0 <= x < 2**32 for x in seeds)
    assert derive(0, "generate", 1, 2) == derive(0, "generate", 1, 2)  # a pure function of its four inputs


def test_config_command_prints_every_key_with_type_value_and_help(capsys):
    from dataclasses import fields, is_dataclass

    from rsft_gen.cli import main
    from rsft_gen.config import Recipe

    def leaves(obj, prefix=""):
        for f in fields(obj):
            v = getattr(obj, f.name)
            assert f.metadata.get("help"), f"{prefix}{f.name} has no help"
            if is_dataclass(v):
                yield from leaves(v, f"{prefix}{f.name}.")
            elif f.name != "rewards":
                yield prefix + f.name

    assert main(["config", "recipes/addition_tiny.yaml", "rounds=2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for key in leaves(Recipe()):
        row = next(i for i, line in enumerate(lines) if line.split()[0] == key)
        assert lines[row + 1].strip().startswith("# "), key  # its help on the next line
    assert "rounds" in out and "2 (default 3)" in next(line for line in lines if line.startswith("rounds "))
    assert any(line.startswith("rewards[0].name ") for line in lines)
    assert main(["config", "rouds=1"]) == 2 and "Did you mean 'rounds'?" in capsys.readouterr().err
