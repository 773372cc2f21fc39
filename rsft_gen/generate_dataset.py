"""The `dataset` backend: a labelled set's own reference completions as the candidates.

    gen = DatasetGenerator(prompts_frame, model_dir)     # prompts_frame has prompt_id, prompt, answer
    gen = backends.make_generator(recipe.generate, model_dir, device, prompts=prompts_frame)  # the same
    cands = gen.generate(prompt_ids, prompts, settings)  # one candidate per prompt: its answer

Used for loss-weighted selection of a labelled set: the `model_loss` reward
scores each example under the current model and the likelihood-ratio rule
(`accept.target: reward_weighted`) keeps example i with probability
w_i / (M q_i), w_i = L_i / Σ L. The proposal is uniform over the N examples of
the round, so log q = −log N for each; nothing is sampled.
"""

from __future__ import annotations

import logging
import math

import pandas as pd

from rsft_gen.generate import Candidate, Generator, SamplingSettings

log = logging.getLogger(__name__)


class DatasetGenerator(Generator):
    def __init__(
        self, prompts: pd.DataFrame, model_dir: str | None = None, tokenizer=None, answer_column: str = "answer"
    ):
        for col in ("prompt_id", answer_column):
            if col not in prompts.columns:
                raise ValueError(
                    f"generate.backend: dataset needs a '{col}' column in the prompt set (the reference completion); "
                    f"its columns are {list(prompts.columns)}."
                )
        self.answers = dict(zip(prompts["prompt_id"].tolist(), prompts[answer_column].astype(str).tolist()))
        if tokenizer is None and model_dir is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer = tokenizer  # only for token_ids / num_tokens; None leaves them empty

    def generate(
        self, prompt_ids: list[int], prompts: list[str], settings: SamplingSettings, progress: bool = True
    ) -> list[Candidate]:
        if settings.n != 1:
            log.info(
                "generate.backend=dataset: one candidate per prompt (its reference completion); "
                "generate.n=%d is ignored",
                settings.n,
            )
        missing = [p for p in prompt_ids if p not in self.answers]
        if missing:
            raise ValueError(
                f"generate.backend: dataset has no reference completion for prompt_id(s) {missing[:5]}; "
                f"the prompt set and the generator's frame differ."
            )
        log_q = -math.log(len(prompt_ids)) if prompt_ids else 0.0  # uniform over the round's N examples
        eos = self.tokenizer.eos_token_id if self.tokenizer is not None else None
        out = []
        for pid in prompt_ids:
            text = self.answers[pid]
            ids = (
                self.tokenizer(text, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
                if self.tokenizer is not None
                else []
            )
            out.append(
                Candidate(
                    prompt_id=int(pid),
                    sample_index=0,
                    completion=text,
                    token_ids=ids,
                    num_tokens=len(ids),
                    log_q=log_q,
                    finish_reason="stop",
                )
            )
        return out

    def close(self) -> None:
        pass
