"""Prompt sources: local files, save_to_disk directories and datasets.load_dataset
builders (here "json" with local data_files), field mapping, splits, sub-sampling."""

import json

import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from rsft_gen.config import DataConfig, RecipeError, load_recipe
from rsft_gen.data import make_task

ROWS = [{"question": f"What is {i}+1?", "solution": str(i + 1), "level": i % 3} for i in range(40)]


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def cfg(**kw) -> DataConfig:
    base = dict(task="file", prompt_field="question", answer_field="solution", train_prompts=100, eval_prompts=5)
    return DataConfig(**{**base, **kw})


@pytest.mark.parametrize("suffix", ["jsonl", "json", "parquet", "csv"])
def test_files_of_every_format_map_fields_and_keep_extra_columns(tmp_path, suffix):
    df = pd.DataFrame(ROWS)
    path = tmp_path / f"q.{suffix}"
    {
        "jsonl": lambda: df.to_json(path, orient="records", lines=True),
        "json": lambda: df.to_json(path, orient="records"),
        "parquet": lambda: df.to_parquet(path),
        "csv": lambda: df.to_csv(path, index=False),
    }[suffix]()
    task = make_task(cfg(path=str(path)), seed_sft_n=3, seed=0)
    assert len(task.eval) == 5 and len(task.train) == 35 and len(task.seed_sft) == 3
    assert set(task.eval.prompt).isdisjoint(task.train.prompt)
    row = task.train.iloc[0]
    assert row.prompt.startswith("What is") and row.answer == str(int(row.prompt.split()[2].split("+")[0]) + 1)
    assert "level" in task.train.columns  # extra columns reach the rewards as keyword arguments


def test_hub_loader_with_local_builder_splits_and_subsample(tmp_path, jsonl):
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({**r, "question": "T" + r["question"]}) + "\n" for r in ROWS[:8]))
    c = cfg(
        task="hub", path="json", data_files={"train": str(jsonl), "test": str(test)}, eval_split="test", subsample=20
    )
    task = make_task(c, seed_sft_n=0, seed=0)
    assert len(task.train) == 20 and len(task.eval) == 5  # subsample of train; eval capped at eval_prompts
    assert all(p.startswith("T") for p in task.eval.prompt) and not any(p.startswith("T") for p in task.train.prompt)
    assert task.train.prompt.tolist() == make_task(c, 0, seed=0).train.prompt.tolist()  # same seed, same rows
    assert task.train.prompt.tolist() != make_task(c, 0, seed=1).train.prompt.tolist()


def test_save_to_disk_directory_with_splits(tmp_path):
    DatasetDict({"train": Dataset.from_list(ROWS), "validation": Dataset.from_list(ROWS[:6])}).save_to_disk(
        tmp_path / "ds"
    )
    task = make_task(cfg(path=str(tmp_path / "ds"), eval_split="validation"), seed_sft_n=0, seed=0)
    assert len(task.train) == 40 and len(task.eval) == 5
    with pytest.raises(RecipeError, match=r"no split 'dev'.*\['train', 'validation'\]"):
        make_task(cfg(path=str(tmp_path / "ds"), split="dev"), 0, 0)


def test_errors_name_the_source_and_field(tmp_path, jsonl):
    with pytest.raises(RecipeError, match=r"q.jsonl.*no field 'problem'.*data.prompt_field.*'question'"):
        make_task(cfg(path=str(jsonl), prompt_field="problem"), 0, 0)
    with pytest.raises(RecipeError, match="missing.jsonl' does not exist"):
        make_task(cfg(path=str(tmp_path / "missing.jsonl")), 0, 0)
    with pytest.raises(RecipeError, match="could not be loaded"):
        make_task(cfg(task="hub", path="json", data_files=str(jsonl), split="nope"), 0, 0)
    with pytest.raises(RecipeError, match="data.path"):
        load_recipe(None, ["data.task=hub"])
    with pytest.raises(RecipeError, match="data.subsample"):
        load_recipe(None, ["data.task=file", "data.path=x.jsonl", "data.subsample=0"])


def test_prompt_template_and_answer_pattern(tmp_path):
    rows = [
        {"text": f"Write f{i}.", "test_list": [f"assert f{i}() == {i}"], "solution": f"so... #### {i},000"}
        for i in range(10)
    ]
    Dataset.from_list(rows).save_to_disk(tmp_path / "ds")
    c = cfg(path=str(tmp_path / "ds"), prompt_template="{text}\nTest: {test_list[0]}", answer_pattern=r"####\s*(.+)")
    task = make_task(c, 0, 0)
    row = task.train.iloc[0]
    i = row.prompt[len("Write f")]
    assert row.prompt == f"Write f{i}.\nTest: assert f{i}() == {i}" and row.answer == f"{i},000"
    with pytest.raises(RecipeError, match="prompt_template' refers to 'question'"):
        make_task(cfg(path=str(tmp_path / "ds"), prompt_template="{question}"), 0, 0)
    with pytest.raises(RecipeError, match="does not match recipe key 'data.answer_pattern'"):
        make_task(cfg(path=str(tmp_path / "ds"), prompt_template="{text}", answer_pattern="ANSWER: (.+)"), 0, 0)
