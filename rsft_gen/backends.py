"""Generator backends by name, and the one live engine of a process.

    gen = make_generator(recipe.generate, model_dir, device)                 # hf | vllm | auto
    gen = make_generator(recipe.generate, model_dir, device, prompts=train)  # dataset: needs the prompt set
    cache = GeneratorCache(recipe, device)
    cache.get(model_dir)                                  # generate.backend, reloaded / rebuilt per checkpoint
    cache.get(model_dir, backend=eval_backend(recipe))    # what evaluation samples with
    cache.release()                                       # before training: sleep or close (Generator protocol)

Backends: hf (transformers `generate`), vllm, auto (vllm when it imports, else
hf), dataset (the prompt set's own reference completions; samples nothing).
Nothing swaps one backend for another behind the recipe's back: `dataset` has
no model to evaluate with, so evaluation uses `eval.backend` (`eval_backend`,
the one place that rule lives).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from rsft_gen.config import GenerateConfig, Recipe, RecipeError
from rsft_gen.generate import Generator

log = logging.getLogger("rsft_gen")
BACKENDS = ("hf", "vllm", "auto", "dataset")


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RecipeError("recipe key 'device' is 'cuda' but no CUDA device is visible; use device=cpu or device=auto.")
    return name


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # ImportError, or a broken install: either way fall back
        return False
    return True


def resolve_backend(name: str) -> str:
    if name == "auto":
        chosen = "vllm" if vllm_available() else "hf"
        log.info("backend=auto: using %s", chosen)
        return chosen
    return name


def eval_backend(recipe: Recipe) -> str:
    """What evaluation samples the round's model with: eval.backend, or when unset generate.backend,
    except `dataset` (its candidates are reference completions, not the model's): then hf."""
    if recipe.eval.backend is not None:
        return recipe.eval.backend
    return "hf" if recipe.generate.backend == "dataset" else recipe.generate.backend


def make_generator(
    cfg: GenerateConfig, model_dir: str, device: str, prompts: pd.DataFrame | None = None, backend: str | None = None
) -> Generator:
    """A generator of `backend` (default cfg.backend) for model_dir; `prompts` only for `dataset`."""
    name = resolve_backend(backend or cfg.backend)
    if name == "dataset":
        if prompts is None:
            raise ValueError(
                "the dataset backend samples nothing (its candidates are the prompt set's reference "
                "completions) and needs the prompt set; to sample a model use hf or vllm (eval.backend)."
            )
        from rsft_gen.generate_dataset import DatasetGenerator

        return DatasetGenerator(prompts, model_dir)
    if name == "hf":
        from rsft_gen.generate_hf import HFGenerator

        return HFGenerator(model_dir, device=device, batch_size=cfg.batch_size)
    if name == "vllm":
        from rsft_gen.generate_vllm import make_vllm_generator

        return make_vllm_generator(model_dir, dict(cfg.vllm), cfg.vllm_lifecycle)
    raise ValueError(f"generate.backend '{name}' has no generator; choose one of {', '.join(BACKENDS)}")


def checkpoint_error(model_dir: str, e: Exception) -> Exception:
    """A checkpoint that does not load: say which, why, and how to get past it."""
    if isinstance(e, (MemoryError, RecipeError)) or "out of memory" in str(e).lower():
        return e
    path = Path(model_dir)
    if path.name == "model" and path.parent.name.startswith("round_"):  # one of the run's own checkpoints
        r = int(path.parent.name.split("_")[1])
        return RecipeError(
            f"checkpoint '{path}' could not be loaded ({type(e).__name__}: {e}); it is corrupt or truncated "
            f"(a crash or a full disk while it was copied?). Delete the directory '{path}' and run the same command "
            f"again: round {r}'s train phase, and every phase after it, is redone."
        )
    return RecipeError(
        f"model '{model_dir}' could not be loaded ({type(e).__name__}: {e}); check recipe key 'model.path' points at "
        f"a complete saved model."
    )


class GeneratorCache:
    """One live generator at a time, rebuilt (or reloaded) when the backend or the model changes.

    Reads only the Generator protocol's declarations (`reloads`, `reload`, `sleep`, `wake`, `close`)."""

    def __init__(self, recipe: Recipe, device: str):
        self.recipe, self.device = recipe, device
        self.current: Generator | None = None
        self.key: tuple[str, str] | None = None  # (backend, model_dir) of `current`

    def get(self, model_dir: str, backend: str | None = None, prompts: pd.DataFrame | None = None) -> Generator:
        """The generator of `backend` (default generate.backend) for model_dir. `prompts`: the prompt set
        whose references the dataset backend returns (the loop's train set, the same every round)."""
        backend = backend or self.recipe.generate.backend
        if self.current is not None and self.key == (backend, model_dir):
            self.current.wake()
            return self.current
        try:
            if self.current is not None and self.key[0] == backend and self.current.reloads:
                self.current.reload(model_dir)  # engines that can swap weights in place keep running
            else:
                self.close()
                self.current = make_generator(
                    self.recipe.generate, model_dir, self.device, prompts=prompts, backend=backend
                )
        except Exception as e:
            raise checkpoint_error(model_dir, e) from e
        self.key = (backend, model_dir)
        return self.current

    def release(self) -> None:
        """Free the engine's memory (before training): an engine that reloads sleeps, any other closes."""
        if self.current is not None and self.current.reloads:
            self.current.sleep()
        else:
            self.close()

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
        self.current, self.key = None, None
