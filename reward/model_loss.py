"""model_loss: each example's mean token loss (negative log-likelihood) under a model.

The loss-weighted selection reward: with `generate.backend: dataset` the
candidates are a labelled set's reference completions, and the likelihood-ratio
rule with `accept.target: reward_weighted` keeps the examples the current model
finds hard more often (probability L_i / max L).

The loop passes the current model as `model_path` (it does so for any reward
with a `model_path` parameter); outside the loop, pass it yourself:

    model_loss(["1+2="], ["3"], model_path="runs/x/round_01/model")   # -> [1.83...]

A recipe for it (evaluation counts the first reward as correctness unless
eval.correct.reward names another, so keep a correctness reward first with
weight 0; its own value decides, not its weighted sum):

    generate: {backend: dataset}
    rewards: [{name: exact_match, weight: 0.0}, {name: model_loss}]
    accept: {rule: likelihood_ratio, target: reward_weighted, log_m: auto}

The completion is scored as the SFT trainer sees it: prompt tokens, then the
completion's tokens and EOS (`add_eos=False` leaves EOS out). Chat recipes pass
prompts as message lists; they are rendered with the model's chat template
exactly as the loop renders them (rsft_gen.prompts).
"""

from __future__ import annotations

import torch

from reward.exact_match import text_of


def _prompt_texts(prompts, tokenizer) -> list[str]:
    """Plain prompts as they are; TRL's conversational ones ([system?, user]) through the chat template."""
    from rsft_gen.prompts import chat_renderer

    renderers: dict = {}
    out = []
    for p in prompts:
        if isinstance(p, str):
            out.append(p)
            continue
        system = next((m["content"] for m in p if m["role"] == "system"), None)
        if system not in renderers:
            renderers[system] = chat_renderer(tokenizer, system)
        out.append(renderers[system](p[-1]["content"]))
    return out


def model_loss(
    prompts,
    completions,
    model_path: str | None = None,
    device: str | None = None,
    batch_size: int = 64,
    add_eos: bool = True,
) -> list[float]:
    """Mean per-token loss of each completion given its prompt under the model at model_path."""
    if not model_path:
        raise ValueError(
            "model_loss needs model_path=<model directory>; "
            "the rsft-gen loop passes the current model's path automatically."
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rsft_gen.likelihood import completion_log_probs

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = (
        AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32 if device == "cpu" else "auto")
        .to(device)
        .eval()
    )
    mean_log_p = completion_log_probs(
        model,
        tokenizer,
        _prompt_texts(prompts, tokenizer),
        [text_of(c) for c in completions],
        add_eos=add_eos,
        per_token_mean=True,
        batch_size=batch_size,
    )
    del model
    return [float(-lp) for lp in mean_log_p]
