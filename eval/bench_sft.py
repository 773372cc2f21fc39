"""Benchmark: our SFT phase (TRL SFTTrainer via rsft_gen.train) against a plain PyTorch loop.

    python eval/bench_sft.py                     # the default recipe's round size: 6000 examples, 4 epochs
    python eval/bench_sft.py --examples 1000 --repeats 3

Same model (same initial weights), same examples, same batch size, epochs,
optimizer (AdamW, constant LR, gradient clipping at 1.0 as the HF Trainer does)
and float32 on CPU, in one process, alternating
A/B so machine drift hits both. Tokens = prompt + completion + EOS tokens
trained on. Reports tokens/s of both and their ratio, for the whole phase
(load, tokenise, train, save) and for the training loop alone.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rsft_gen.config import TinyModelConfig, TrainConfig
from rsft_gen.data import addition_problems
from rsft_gen.tiny_model import build_tiny_model
from rsft_gen.train import freeze_parameters, train_sft


def plain_loop(
    model_dir: str, prompts, completions, cfg: TrainConfig, seed: int, out_dir: Path
) -> tuple[int, float, float]:
    """The baseline: tokenise, pad per batch, AdamW, save. Returns (tokens, phase_s, loop_s)."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    freeze_parameters(model, cfg.freeze)  # the same frozen layers as the recipe's train phase
    params = [p for p in model.parameters() if p.requires_grad]
    examples = []
    for p, c in zip(prompts, completions):
        p_ids = tok(p)["input_ids"]
        c_ids = tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        examples.append((p_ids + c_ids, [-100] * len(p_ids) + c_ids))
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(seed)
    tokens = 0
    loop_start = time.perf_counter()
    for _ in range(int(cfg.epochs)):
        order = rng.permutation(len(examples))
        for b in range(0, len(order), cfg.batch_size):
            batch = [examples[i] for i in order[b : b + cfg.batch_size]]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full(
                (len(batch), width), tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            )
            labels = torch.full((len(batch), width), -100)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, (x, y) in enumerate(batch):
                ids[j, : len(x)], labels[j, : len(y)], mask[j, : len(x)] = torch.tensor(x), torch.tensor(y), 1
            tokens += int(mask.sum())
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # as the HF Trainer does by default
            opt.step()
    loop_s = time.perf_counter() - loop_start
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return tokens, time.perf_counter() - start, loop_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_sft."))
    model_dir = str(build_tiny_model(work / "base", TinyModelConfig(), seed=0))
    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
    data = addition_problems(args.examples, [1, 2], seed=0)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=1e-3, logging_steps=10**6)
    sft = data.rename(columns={"answer": "completion"})
    ours_phase, ours_loop, base_phase, base_loop = [], [], [], []
    for rep in range(args.repeats):
        start = time.perf_counter()
        m = train_sft(model_dir, sft, work / f"ours{rep}" / "model", cfg, "cpu", seed=rep)
        phase_s = time.perf_counter() - start
        tokens = m["train/tokens"]
        ours_phase.append(tokens / phase_s)
        ours_loop.append(m["train/tokens_per_s"])
        b_tokens, b_phase, b_loop = plain_loop(
            model_dir, sft.prompt.tolist(), sft.completion.tolist(), cfg, rep, work / f"base{rep}"
        )
        base_phase.append(b_tokens / b_phase)
        base_loop.append(b_tokens / b_loop)
        print(f"repeat {rep}: ours {tokens:.0f} tok in {phase_s:.1f}s, plain {b_tokens} tok in {b_phase:.1f}s")
    med = statistics.median
    print(
        f"\nmodel: tiny Llama, {params / 1e6:.2f}M parameters; {args.examples} examples x {args.epochs} epochs, "
        f"batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    print("| measure | rsft-gen SFT (TRL) tok/s | plain PyTorch loop tok/s | ratio |")
    print("| --- | --- | --- | --- |")
    print(
        f"| whole phase (load, tokenise, train, save) | {med(ours_phase):.0f} | {med(base_phase):.0f} "
        f"| {med(ours_phase) / med(base_phase):.2f} |"
    )
    print(
        f"| training loop only | {med(ours_loop):.0f} | {med(base_loop):.0f} | {med(ours_loop) / med(base_loop):.2f} |"
    )


if __name__ == "__main__":
    main()
