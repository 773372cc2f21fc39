"""Generation: what a backend returns, and how the loop picks a backend.

Every backend (HF `generate`, vLLM, or a data set's own reference completions)
has the same two methods:

    gen = make_generator(recipe.generate, model_dir, device)
    cands = gen.generate(prompt_ids, prompts, SamplingSettings(n=8, temperature=1.0))
    gen.close()

and returns one `Candidate` per sample, with log q: the log-probability of the
sampled tokens under the distribution that really drew them (temperature,
top-k and top-p applied), which likelihood-ratio acceptance needs. Settings
with log_q=False skip it (NaN) and draw the same samples.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Protocol

import pandas as pd

from rsft_gen.config import GenerateConfig

log = logging.getLogger(__name__)


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
    def generate(self, prompt_ids: list[int], prompts: list[str], settings: SamplingSettings) -> list[Candidate]: ...

    def close(self) -> None: ...


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # ImportError, or a broken install: either way fall back
        return False
    return True


def resolve_backend(name: str) -> str:
    if name == "auto":
        chosen = "vllm" if vllm_available() else "hf"
        log.info("generate.backend=auto: using %s", chosen)
        return chosen
    return name


def make_generator(cfg: GenerateConfig, model_dir: str, device: str, prompts: pd.DataFrame | None = None) -> Generator:
    backend = resolve_backend(cfg.backend)
    if backend == "dataset":
        if prompts is not None:  # the round's candidates are the prompt set's reference completions
            from rsft_gen.generate_dataset import DatasetGenerator

            return DatasetGenerator(prompts, model_dir)
        backend = "hf"  # without a prompt set (evaluation) the model itself is sampled
    if backend == "hf":
        from rsft_gen.generate_hf import HFGenerator

        return HFGenerator(model_dir, device=device, batch_size=cfg.batch_size)
    if backend == "vllm":
        from rsft_gen.generate_vllm import make_vllm_generator

        return make_vllm_generator(model_dir, dict(cfg.vllm), cfg.vllm_lifecycle)
    raise ValueError(f"generate.backend '{cfg.backend}' has no generator; choose hf, vllm, auto or dataset")


def candidates_frame(cands: list[Candidate], prompts: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate, joined with its prompt's columns (answer, tests, ...)."""
    df = pd.DataFrame([asdict(c) for c in cands])
    if df.empty:
        df = pd.DataFrame(columns=[f for f in Candidate.__dataclass_fields__])
    df = prompts.merge(df, on="prompt_id", how="right")
    return df.sort_values(["prompt_id", "sample_index"], kind="stable").reset_index(drop=True)
