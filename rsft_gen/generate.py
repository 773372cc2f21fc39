"""Generation: what a backend returns, and the protocol every backend follows.

Every backend (HF `generate`, vLLM, or a data set's own reference completions)
is a `Generator`; rsft_gen/backends.py builds one by name and keeps the live one:

    gen = make_generator(recipe.generate, model_dir, device)   # from rsft_gen.backends
    cands = gen.generate(prompt_ids, prompts, SamplingSettings(n=8, temperature=1.0))
    gen.close()

and returns one `Candidate` per sample, with log q: the log-probability of the
sampled tokens under the distribution that really drew them (temperature,
top-k and top-p applied), which likelihood-ratio acceptance needs. Settings
with log_q=False skip it (NaN) and draw the same samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import pandas as pd

from rsft_gen.config import GenerateConfig


@dataclass
class SamplingSettings:
    n: int = 1
    temperature: float = 1.0  # 0 = greedy; log q is then 0 (a point mass drew it)
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 8
    seed: int = 0
    log_q: bool = True  # False: log q is NaN (not computed); the samples are the same either way

    @classmethod
    def from_config(cls, cfg: GenerateConfig, seed: int, log_q: bool = True) -> "SamplingSettings":
        return cls(cfg.n, cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens, seed, log_q)


@dataclass
class Candidate:
    prompt_id: int
    sample_index: int  # 0..n-1 within its prompt
    completion: str
    token_ids: list[int]
    num_tokens: int
    log_q: float  # NaN when the settings asked for none
    finish_reason: str  # "stop" (EOS) or "length"


class Generator(Protocol):
    """A backend: `generate`, `close`, and the engine lifecycle the loop drives between phases.

    The lifecycle members have defaults for a backend that loads one model and keeps it until
    closed (HF, the dataset backend, vLLM "restart"): `reloads` False, nothing to sleep or wake.
    An engine that swaps checkpoints in place (vLLM "inplace") sets `reloads` and overrides all
    three. backends.GeneratorCache reads only these declarations: for a new checkpoint, `reload`
    if `reloads`, else close and build a new generator; before training (the trainer needs the
    memory), `sleep` if `reloads`, else close; the same checkpoint again after a sleep, `wake`.
    """

    reloads: bool = False

    def generate(
        self, prompt_ids: list[int], prompts: list[str], settings: SamplingSettings, progress: bool = True
    ) -> list[Candidate]: ...

    def reload(self, model_dir: str) -> None:
        """Load another checkpoint's weights into the running engine (only where `reloads`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot swap weights in place; build a new generator")

    def sleep(self) -> None:
        """Free the engine's memory but keep the engine; `wake` or `reload` brings it back."""

    def wake(self) -> None:
        """Back from `sleep`, with the model it had."""

    def close(self) -> None: ...


def candidates_frame(cands: list[Candidate], prompts: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate, joined with its prompt's columns (answer, tests, ...)."""
    df = pd.DataFrame([asdict(c) for c in cands])
    if df.empty:
        df = pd.DataFrame(columns=[f for f in Candidate.__dataclass_fields__])
    df = prompts.merge(df, on="prompt_id", how="right")
    return df.sort_values(["prompt_id", "sample_index"], kind="stable").reset_index(drop=True)
