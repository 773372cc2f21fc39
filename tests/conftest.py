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


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="session")
def chat_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with a chat template (CHAT_TEMPLATE) whose text starts with BOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("chat_model")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


def chat_file_overrides(model_dir: str, out, data) -> list[str]:
    """One round of the chat model with system prompt "Add." on a JSONL file of {q, a} rows."""
    return [
        f"output_dir={out}",
        "rounds=1",
        f"model.path={model_dir}",
        "model.chat_template=true",
        "model.system_prompt=Add.",
        "data.task=file",
        f"data.path={data}",
        "data.prompt_field=q",
        "data.answer_field=a",
    ]


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
