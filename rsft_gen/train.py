"""Training: fine-tune on the round's SFT set with TRL's SFTTrainer.

    from rsft_gen.train import train_sft
    metrics = train_sft("round_01/model_in", sft_df, Path("round_01/model"), recipe.train, "cpu", seed=0)

Prompt-completion format, loss on the completion only (EOS appended), tokenised
once in a batch by `tokenize_sft`.
Precision and gradient checkpointing are chosen for the device: TRL's
defaults (bf16 + checkpointing) make CPU training ~14x slower, so on CPU we
train in float32 without checkpointing; on GPUs, bf16 where supported.

train.peft (LoRA) and train.freeze restrict what trains; the saved checkpoint is
always a full transformers model (adapters merged) so any generator loads it.
This runs in the calling process; for train.num_processes > 1 the loop calls
rsft_gen/train_launch.py instead, which runs this function in each process of
an `accelerate launch`.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from rsft_gen.config import RecipeError, TrainConfig
from rsft_gen.state import publish_dir

log = logging.getLogger(__name__)


def precision_flags(cfg: TrainConfig, device: str) -> dict:
    """bf16/fp16 flags for SFTConfig, and gradient checkpointing, by device."""
    precision = cfg.precision
    if precision == "auto":
        if device == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            precision = "bf16"
        else:
            precision = "fp32"
    checkpointing = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else device == "cuda"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "gradient_checkpointing": checkpointing}


def sft_config(cfg: TrainConfig, out_dir: str, device: str, seed: int, report_to: list[str]) -> SFTConfig:
    return SFTConfig(
        output_dir=out_dir,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        logging_steps=cfg.logging_steps,
        save_strategy="no",  # we save once, atomically, after training
        report_to=report_to,
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        completion_only_loss=True,
        dataset_kwargs={"skip_prepare_dataset": True},  # tokenize_sft already prepared it
        disable_tqdm=False,
        **precision_flags(cfg, device),
    )


def tokenize_sft(tokenizer, sft: pd.DataFrame, max_length: int | None) -> Dataset:
    """input_ids and labels (-100 on the prompt) for prompt-completion pairs, in one batched call.

    The same tokens TRL's own preparation gives (prompt tokenised with special tokens,
    the completion starting where prompt and prompt+completion diverge, EOS appended,
    truncated to max_length, fully masked rows dropped), but without five per-row
    `datasets.map` passes, which cost more than the training itself for small models.
    """
    prompts, completions = sft["prompt"].tolist(), sft["completion"].tolist()
    prompt_ids = tokenizer(prompts)["input_ids"]
    full_ids = tokenizer([p + c for p, c in zip(prompts, completions)])["input_ids"]
    eos = tokenizer.eos_token_id
    rows: dict[str, list] = {"input_ids": [], "labels": []}
    for p, ids in zip(prompt_ids, full_ids):
        if ids[-1:] != [eos]:
            ids = ids + [eos]
        start = next((i for i, (a, b) in enumerate(zip(p, ids)) if a != b), min(len(p), len(ids)))
        labels = [-100] * start + ids[start:]
        if max_length is not None:
            ids, labels = ids[:max_length], labels[:max_length]
        if any(x != -100 for x in labels):  # nothing to learn from a fully masked row
            rows["input_ids"].append(ids)
            rows["labels"].append(labels)
    if not rows["input_ids"]:
        raise RecipeError(
            f"every SFT example is longer than train.max_length={max_length} before its completion starts; "
            f"raise train.max_length."
        )
    return Dataset.from_dict(rows)


def freeze_parameters(model, patterns: list[str]) -> int:
    """Freeze every parameter whose name matches one of the regexes; returns how many tensors."""
    if not patterns:
        return 0
    regexes = [re.compile(p) for p in patterns]
    frozen = 0
    for name, param in model.named_parameters():
        if any(rx.search(name) for rx in regexes):
            param.requires_grad_(False)
            frozen += 1
    if frozen == 0:
        names = [n for n, _ in model.named_parameters()][:6]
        raise RecipeError(
            f"recipe key 'train.freeze' ({list(patterns)}) matches no parameter; names look like {names}."
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise RecipeError(f"recipe key 'train.freeze' ({list(patterns)}) freezes every parameter; nothing would train.")
    return frozen


def lora_config(cfg: TrainConfig):
    if not cfg.peft:
        return None
    from peft import LoraConfig

    try:
        return LoraConfig(task_type="CAUSAL_LM", **dict(cfg.peft))
    except TypeError as e:
        raise RecipeError(f"recipe key 'train.peft' has an option peft.LoraConfig does not take: {e}") from None


def save_full_model(trainer: SFTTrainer, tokenizer, path: Path) -> None:
    """Save a plain transformers checkpoint; LoRA adapters are merged in first."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # a PeftModel: generation and vLLM need the full weights
        model = model.merge_and_unload()
        if trainer.accelerator.is_main_process:
            model.save_pretrained(str(path))
    else:
        trainer.save_model(str(path))  # handles DeepSpeed/FSDP state gathering on every process
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(path))
    trainer.accelerator.wait_for_everyone()


def train_sft(
    model_dir: str | Path,
    sft: pd.DataFrame,
    out_dir: Path,
    cfg: TrainConfig,
    device: str,
    seed: int,
    report_to: list[str] | None = None,
    work_dir: Path | None = None,
) -> dict:
    """Train model_dir on sft (prompt, completion) and publish the result at out_dir.

    work_dir: where the trainer writes before publishing; train_launch names it, since every
    process of a launched run must agree on it (default: a fresh temporary directory beside out_dir)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32 if device == "cpu" else "auto")
    frozen = freeze_parameters(model, cfg.freeze)
    dataset = tokenize_sft(tokenizer, sft, cfg.max_length)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix=".model.", dir=out_dir.parent))
    args = sft_config(cfg, str(tmp_out / "trainer"), device, seed, report_to or [])
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(cfg)
    )
    # Tokens the model actually sees (prompt + completion + EOS), for throughput.
    tokens = int(sum(len(x) for x in trainer.train_dataset["input_ids"]) * cfg.epochs)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    save_full_model(trainer, tokenizer, tmp_out / "final")
    if trainer.accelerator.is_main_process:
        publish_dir(tmp_out / "final", out_dir)
        shutil.rmtree(tmp_out, ignore_errors=True)
    return {
        "train/trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "train/frozen_tensors": frozen,
        "train/loss": float(result.training_loss),
        "train/examples": len(sft),
        "train/steps": int(result.global_step),
        "train/tokens": tokens,
        "train/seconds": seconds,
        "train/tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
    }
