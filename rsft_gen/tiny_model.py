"""A tiny Llama-architecture causal LM and a character-level tokenizer, built in code.

    from rsft_gen.tiny_model import build_tiny_model
    build_tiny_model("runs/x/base_model", TinyModelConfig(), seed=0)

Both are saved with `save_pretrained`, so the rest of the tool loads them through
exactly the same AutoModelForCausalLM / AutoTokenizer path as any local or hub
model (and vLLM can serve them). Nothing is downloaded.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rsft_gen.config import TinyModelConfig

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
# Printable ASCII covers the synthetic tasks and simple text prompts.
CHARS = list(string.digits + string.ascii_letters + string.punctuation + " \n")


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # One token per character; Fuse joins them back without separators.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(out_dir: str | Path, cfg: TinyModelConfig, seed: int = 0) -> Path:
    """Write a freshly initialised tiny model and its tokenizer to out_dir."""
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
