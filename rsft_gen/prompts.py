"""Prompt text for chat models: the one place a prompt goes through the chat template.

    from rsft_gen.prompts import render_task
    task = render_task(task, recipe.model, "Qwen/Qwen2.5-0.5B-Instruct")

With `model.chat_template: true`, each prompt becomes the tokenizer's chat
template applied to [system?, user: prompt] with the generation prompt added;
the completion is whatever follows it. The loop renders the prompt sets once,
so the generator, the SFT set (prompt + completion) and eval see the same text.

BOS: templates such as Llama 3's write the BOS token into the text, and both
the HF generator and TRL's SFT tokenization (`tokenizer(text)`) add one again
when the tokenizer adds special tokens; we drop the text's BOS in that case so
every path sees exactly one.

Rewards get the prompt as TRL's conversational form, the message list before
rendering: render_task keeps it, as JSON, in the column `prompt_messages`
(absent without the chat template, where rewards get the prompt text).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
from transformers import AutoTokenizer

from rsft_gen.config import ModelConfig, RecipeError
from rsft_gen.data import TaskData

MESSAGES = "prompt_messages"  # column: the unrendered [system?, user] messages, as JSON


def chat_messages(prompt: str, system_prompt: str | None) -> list[dict]:
    """The messages a prompt is rendered from: [system?, user]."""
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": prompt}
    ]


def chat_renderer(tokenizer, system_prompt: str | None):
    """A function prompt -> rendered text, for this tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise RecipeError(
            f"recipe key 'model.chat_template' is true but the tokenizer of '{tokenizer.name_or_path}' "
            "has no chat template; "
            "use an instruct/chat model, or set model.chat_template=false to send prompts as plain text."
        )
    bos = tokenizer.bos_token
    adds_bos = bos is not None and tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id]

    def render(prompt: str) -> str:
        text = tokenizer.apply_chat_template(
            chat_messages(prompt, system_prompt), tokenize=False, add_generation_prompt=True
        )
        if adds_bos and text.startswith(bos):
            text = text[len(bos) :]
        return text

    return render


def render_prompts(df: pd.DataFrame, render, system_prompt: str | None = None) -> pd.DataFrame:
    if not len(df):
        return df
    messages = [json.dumps(chat_messages(p, system_prompt)) for p in df.prompt]
    return df.assign(prompt=[render(p) for p in df.prompt], **{MESSAGES: messages})


def render_frame(df: pd.DataFrame, cfg: ModelConfig, model_dir: str) -> pd.DataFrame:
    """One prompt set rendered for the model (`rsft-gen eval` uses it on a run's eval set)."""
    return render_task(TaskData(train=df, eval=df.iloc[:0], seed_sft=df.iloc[:0]), cfg, model_dir).train


def render_task(task: TaskData, cfg: ModelConfig, model_dir: str) -> TaskData:
    """The task with every prompt set rendered for the model (unchanged without chat_template)."""
    if not cfg.chat_template:
        if cfg.system_prompt:
            raise RecipeError(
                "recipe key 'model.system_prompt' is set but model.chat_template is false; "
                "a system prompt needs the chat template."
            )
        return task
    render = chat_renderer(AutoTokenizer.from_pretrained(model_dir), cfg.system_prompt)
    return replace(
        task,
        **{
            name: render_prompts(getattr(task, name), render, cfg.system_prompt)
            for name in ("train", "eval", "seed_sft")
        },
    )
