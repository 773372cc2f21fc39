"""reward_model: scores (prompt, completion) pairs with a local AutoModelForSequenceClassification.

`model=` is a local directory (or a hub id already in the cache); the model is
loaded once per process and kept. Texts are batched (`batch_size=`), sorted by
length so batches pad little. The score is the logit of `label` (default: the
only logit when num_labels == 1, else label 1), or its softmax probability with
`output="prob"`. `input=` chooses how the pair is fed: "pair" (the tokenizer's
text-pair encoding, default), "concat" (prompt + completion as one text) or
"chat" (the tokenizer's chat template with a user and an assistant turn, as
TRL's RewardTrainer models expect).

    rewards=[{name: reward_model, kwargs: {model: /models/my-rm, batch_size: 32}}]

>>> import tempfile, torch
>>> from transformers import BertConfig, BertForSequenceClassification
>>> from rsft_gen.tiny_model import build_tokenizer
>>> d = tempfile.mkdtemp()
>>> _ = torch.manual_seed(0)
>>> tok = build_tokenizer()
>>> cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
...                  intermediate_size=32, num_labels=1, pad_token_id=tok.pad_token_id)
>>> BertForSequenceClassification(cfg).save_pretrained(d); tok.save_pretrained(d)  # doctest: +ELLIPSIS
(...)
>>> scores = reward_model(["1+1="] * 3, ["2", "3", "2"], model=d, batch_size=2)
>>> len(scores), scores[0] == scores[2], scores[0] != scores[1]
(3, True, True)
"""

from __future__ import annotations

import logging
from functools import lru_cache

from reward.exact_match import text_of

log = logging.getLogger(__name__)


@lru_cache(maxsize=2)
def _load(model: str, device: str, dtype: str):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    net = AutoModelForSequenceClassification.from_pretrained(model, dtype=getattr(torch, dtype)).to(device).eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if net.config.pad_token_id is None:
        net.config.pad_token_id = tok.pad_token_id
    log.info("reward_model: loaded %s (%d labels) on %s", model, net.config.num_labels, device)
    return tok, net


def _encode(tok, prompts, completions, input: str, max_length: int):
    if input == "chat":  # a conversational prompt keeps its messages (system included)
        texts = [
            tok.apply_chat_template(
                (p if not isinstance(p, str) else [{"role": "user", "content": p}])
                + [{"role": "assistant", "content": text_of(c)}],
                tokenize=False,
            )
            for p, c in zip(prompts, completions)
        ]
        return tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    prompts, completions = [text_of(p) for p in prompts], [text_of(c) for c in completions]
    if input == "pair":
        return tok(prompts, completions, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    if input == "concat":
        texts = [p + c for p, c in zip(prompts, completions)]
    else:
        raise ValueError(f"reward_model: input is '{input}'; use pair, concat or chat")
    return tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def reward_model(
    prompts,
    completions,
    model: str,
    batch_size: int = 16,
    max_length: int = 1024,
    label: int | None = None,
    output: str = "logit",
    input: str = "pair",
    device: str | None = None,
    dtype: str = "float32",
) -> list[float]:
    """One score per completion from a sequence-classification model."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tok, net = _load(str(model), device, dtype)
    if label is None:
        label = 0 if net.config.num_labels == 1 else 1
    order = sorted(range(len(completions)), key=lambda i: len(text_of(prompts[i])) + len(text_of(completions[i])))
    scores = [0.0] * len(completions)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = _encode(tok, [prompts[i] for i in idx], [completions[i] for i in idx], input, max_length).to(device)
            logits = net(**batch).logits.float()
            values = logits.softmax(-1)[:, label] if output == "prob" else logits[:, label]
            for i, v in zip(idx, values.tolist()):
                scores[i] = v
    return scores
