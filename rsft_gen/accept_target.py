"""Target-model scoring for likelihood-ratio acceptance (`accept.target: model`).

    from rsft_gen.accept_target import target_log_probs
    log_p = target_log_probs(candidates, "path/to/target_model", device="cpu")

log p(y|x) is the target model's log-likelihood of exactly the tokens the
sampler drew (`token_ids`, which end with EOS when the sample stopped) after
the prompt tokenised as the generators do (`tokenizer(prompt)["input_ids"]`).
Scoring the same token sequence under both models keeps p and q distributions
over the same outcomes (including "cut off at max_new_tokens"), which exact
rejection sampling needs. The target must therefore share the sampler's
tokenizer.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from rsft_gen.likelihood import token_ids_log_probs

log = logging.getLogger(__name__)


def load_target(path: str, device: str = "cpu"):
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32 if device == "cpu" else "auto")
    except OSError as e:
        raise ValueError(
            f"recipe key 'accept.target_model' is '{path}', which could not be loaded as a model ({e}); "
            "give a saved model directory or hub id."
        ) from None
    return model.to(device).eval(), tokenizer


def target_log_probs(
    cands: pd.DataFrame,
    path: str,
    device: str = "cpu",
    batch_size: int = 64,
    chunk: int = 4096,
    model=None,
    tokenizer=None,
) -> np.ndarray:
    """log p(token_ids | prompt) under the target model, one float per candidate row."""
    for col in ("prompt", "token_ids"):
        if col not in cands.columns:
            raise ValueError(
                f"accept.target: model needs the candidate column '{col}' (the generator writes it); "
                f"columns are {list(cands.columns)}."
            )
    if model is None or tokenizer is None:
        model, tokenizer = load_target(path, device)
    start = time.perf_counter()
    prompt_ids = {p: tokenizer(p)["input_ids"] for p in cands["prompt"].unique()}
    p_ids = [prompt_ids[p] for p in cands["prompt"]]
    c_ids = [[int(t) for t in ids] for ids in cands["token_ids"]]
    vocab = model.get_output_embeddings().weight.shape[0]
    too_big = max((max(c) for c in c_ids if len(c)), default=-1)
    if too_big >= vocab:
        raise ValueError(
            f"accept.target_model '{path}' has a vocabulary of {vocab} tokens "
            f"but a candidate holds token id {too_big}; the target model must share the sampler's tokenizer."
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Score each distinct (prompt, completion) once: samples repeat, often many times.
    keys = [(tuple(p), tuple(c)) for p, c in zip(p_ids, c_ids)]
    unique = list(dict.fromkeys(keys))
    scores = np.empty(len(unique), dtype=np.float64)
    # Sort by length so batches pad little; chunks give the progress bar something to count.
    order = np.argsort([len(p) + len(c) for p, c in unique], kind="stable")
    for lo in tqdm(
        range(0, len(order), chunk), desc="target log p", unit="chunk", leave=False, disable=len(order) <= chunk
    ):
        idx = order[lo : lo + chunk]
        scores[idx] = token_ids_log_probs(
            model,
            [list(unique[i][0]) for i in idx],
            [list(unique[i][1]) for i in idx],
            batch_size=batch_size,
            pad_id=pad,
        )
    index = {k: i for i, k in enumerate(unique)}
    out = scores[[index[k] for k in keys]]
    log.info(
        "accept: scored %d candidates (%d distinct) under target model %s in %.1fs",
        len(out),
        len(unique),
        path,
        time.perf_counter() - start,
    )
    return out
