"""Teacher-forced log-likelihoods of completions, under the raw model or a sampling distribution.

    from rsft_gen.likelihood import completion_log_probs
    lp = completion_log_probs(model, tok, ["1+2="], ["3"], temperature=0.7, top_p=0.9)

Used to score a target model's log p for likelihood-ratio acceptance, a data
set's per-example loss, and to check a generator's log q. The warpers are
transformers' own (temperature, then top-k, then top-p, the order `generate`
applies them), so log q computed here matches what `generate` sampled from.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper


def sampling_warpers(temperature: float, top_p: float, top_k: int) -> LogitsProcessorList:
    warpers = LogitsProcessorList()
    if temperature not in (0.0, 1.0):
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k and top_k > 0:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    return warpers


def sampled_log_probs(scores: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of `tokens` [B] under processed scores [B, V] (−inf = filtered out)."""
    return torch.log_softmax(scores.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def token_ids_log_probs(
    model,
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int = 64,
    pad_id: int = 0,
    per_token_mean: bool = False,
) -> np.ndarray:
    """Sum (or mean) of each completion's token log-probs given its prompt, teacher-forced."""
    warpers = sampling_warpers(temperature, top_p, top_k)
    device = next(model.parameters()).device
    out = np.zeros(len(prompt_ids), dtype=np.float64)
    for start in range(0, len(prompt_ids), batch_size):
        ps, cs = prompt_ids[start : start + batch_size], completion_ids[start : start + batch_size]
        seqs = [p + c for p, c in zip(ps, cs)]
        width = max(len(s) for s in seqs)
        # Right padding: positions stay 0..len-1, as in generation from an unpadded prompt.
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        for i, (p, c) in enumerate(zip(ps, cs)):
            if not c:
                continue
            total = 0.0
            for j, tok in enumerate(c):
                pos = len(p) + j - 1  # logits at pos predict token at pos + 1
                scores = logits[i : i + 1, pos]
                if warpers:
                    scores = warpers(ids[i : i + 1, : pos + 1].to(device), scores)
                total += float(sampled_log_probs(scores, torch.tensor([tok], device=device)))
            out[start + i] = total / len(c) if per_token_mean else total
    return out


def completion_log_probs(
    model, tokenizer, prompts: list[str], completions: list[str], *, add_eos: bool = False, **kw
) -> np.ndarray:
    """Text version of `token_ids_log_probs`; tokenises prompt and completion separately,
    as the generators and the SFT trainer do."""
    p_ids = [tokenizer(p)["input_ids"] for p in prompts]
    c_ids = [
        tokenizer(c, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if add_eos else [])
        for c in completions
    ]
    kw.setdefault("pad_id", tokenizer.pad_token_id or 0)
    return token_ids_log_probs(model, p_ids, c_ids, **kw)
