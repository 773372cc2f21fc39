"""Shared fixtures: tiny models built in-process (no downloads)."""

from __future__ import annotations

import logging

import pytest

from rsft_gen.config import TinyModelConfig, load_recipe
from rsft_gen.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A randomly initialised tiny Llama + char tokenizer, saved with save_pretrained."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny_model"), TinyModelConfig(), seed=0))


@pytest.fixture
def fast_recipe(tmp_path):
    """A small, quick variant of the default recipe, writing into a temporary run dir."""

    def make(*overrides: str):
        base = [
            f"output_dir={tmp_path / 'run'}",
            "rounds=1",
            "data.train_prompts=64",
            "data.eval_prompts=32",
            "seed_sft.n=32",
            "seed_sft.epochs=1",
            "generate.n=2",
            "tracking.wandb.mode=disabled",
        ]
        return load_recipe("recipes/addition_tiny.yaml", base + list(overrides))

    return make


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.INFO, logger="rsft_gen")
