"""SmolLM2-135M-Instruct on the demo recipe's own prompts: what each choice of the recipe costs.

    python eval/bench_smollm2.py                              # generation, engine lifecycle, SFT (~15 min, 2 cores)
    python eval/bench_smollm2.py --parts sft --sft-examples 128
    python eval/bench_smollm2.py --recipe recipes/smollm2_chain_sum.yaml generate.n=4

- generation: our HF backend against our vLLM backend (CPU build), the recipe's prompts rendered through
  the chat template and its sampling settings, alternating in one process, median of --reps;
- engine lifecycle: start, shutdown and in-place weight reload of a vLLM engine, and the memory a live
  engine holds while the trainer would run (the loop's choice between `inplace` and `restart`);
- SFT: the train phase (TRL SFTTrainer through rsft_gen.train, the recipe's train settings, frozen layers
  included) against a plain PyTorch loop with the same frozen parameters, batch, optimizer and data.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmarks' helpers

from bench_generate import engine_rss_gib, timed  # noqa: E402
from bench_sft import plain_loop  # noqa: E402

from rsft_gen.config import load_recipe  # noqa: E402
from rsft_gen.data import make_task  # noqa: E402
from rsft_gen.generate import SamplingSettings  # noqa: E402
from rsft_gen.model_source import resolve_base_model  # noqa: E402
from rsft_gen.prompts import render_task  # noqa: E402


def bench_generation(model_dir: str, prompts: list[str], settings: SamplingSettings, args) -> dict:
    from rsft_gen.generate_hf import HFGenerator
    from rsft_gen.generate_vllm import ReloadingVLLMGenerator

    ids = list(range(len(prompts)))
    count = lambda gen: sum(c.num_tokens for c in gen.generate(ids, prompts, settings, progress=False))  # noqa: E731
    vllm = ReloadingVLLMGenerator(model_dir, {})
    hf = HFGenerator(model_dir, device="cpu", batch_size=args.hf_batch_size)
    for gen in (vllm, hf):  # warm-up: first calls pay one-off costs
        gen.generate(ids[:4], prompts[:4], settings, progress=False)
    rates = {"hf": [], "vllm": []}
    for _ in range(args.reps):  # alternate, so drifting load hits both alike
        for key, gen in (("vllm", vllm), ("hf", hf)):
            seconds, tokens = timed(lambda: count(gen))
            rates[key].append(tokens / seconds)
            print(f"  {key}: {tokens} tokens in {seconds:.1f}s", flush=True)
    out = {key: statistics.median(r) for key, r in rates.items()}
    out["rss_gib"] = engine_rss_gib()
    out["reload_s"], _ = timed(lambda: vllm.reload(model_dir) or 0)
    out["close_s"], _ = timed(vllm.close)
    out["start_s"] = vllm.start_seconds
    hf.close()
    return out


def bench_sft(model_dir: str, task, recipe, args) -> dict:
    from rsft_gen.train import train_sft

    sft = task.train.iloc[: args.sft_examples]
    # Completions shaped like the demo's accepted samples ("The final answer is 172.").
    sft = sft.assign(completion=[f"The final answer is {a}." for a in sft.answer])[
        ["prompt_id", "prompt", "completion"]
    ]
    cfg = recipe.train
    work = Path(tempfile.mkdtemp(prefix="bench_smollm2_sft."))
    ours_phase, ours_loop, base_phase, base_loop = [], [], [], []
    for rep in range(args.reps):
        start = time.perf_counter()
        m = train_sft(model_dir, sft, work / f"ours{rep}" / "model", cfg, "cpu", seed=rep)
        phase_s = time.perf_counter() - start
        ours_phase.append(m["train/tokens"] / phase_s)
        ours_loop.append(m["train/tokens_per_s"])
        tokens, b_phase, b_loop = plain_loop(
            model_dir, sft.prompt.tolist(), sft.completion.tolist(), cfg, rep, work / f"base{rep}"
        )
        base_phase.append(tokens / b_phase)
        base_loop.append(tokens / b_loop)
        print(
            f"  repeat {rep}: ours {m['train/tokens']} tokens in {phase_s:.1f}s, plain {tokens} in {b_phase:.1f}s",
            flush=True,
        )
    med = statistics.median
    return {
        "ours_phase": med(ours_phase),
        "ours_loop": med(ours_loop),
        "base_phase": med(base_phase),
        "base_loop": med(base_loop),
        "examples": len(sft),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/smollm2_chain_sum.yaml")
    ap.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    ap.add_argument("--parts", nargs="+", default=["generate", "sft"], choices=["generate", "sft"])
    ap.add_argument("--prompts", type=int, default=64, help="prompts per generation call")
    ap.add_argument("--sft-examples", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hf-batch-size", type=int, default=None, help="default: the recipe's generate.batch_size")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    recipe = load_recipe(args.recipe, args.overrides)
    args.hf_batch_size = args.hf_batch_size or recipe.generate.batch_size
    model_dir = resolve_base_model(recipe.model)
    task = render_task(make_task(recipe.data, 0, recipe.seed), recipe.model, model_dir)
    g = recipe.generate
    print(f"recipe {args.recipe} {' '.join(args.overrides)}; model {model_dir}")
    if "generate" in args.parts:
        settings = SamplingSettings.from_config(g, seed=0, log_q=False)
        r = bench_generation(model_dir, task.train.prompt.tolist()[: args.prompts], settings, args)
        print(
            f"\nGeneration ({args.prompts} prompts x n={g.n}, temperature {g.temperature}, top-p {g.top_p}, "
            f"max {g.max_new_tokens} new tokens; generated tokens/s, median of {args.reps})\n"
        )
        print("| rsft-gen HF backend | rsft-gen vLLM backend (CPU build) | vLLM / HF |")
        print("| ---: | ---: | ---: |")
        print(f"| {r['hf']:.0f} | {r['vllm']:.0f} | {r['vllm'] / r['hf']:.2f} |")
        print(
            "\n| engine start (s) | shutdown (s) | in-place weight reload (s) | engine RSS held while training (GiB) |"
        )
        print("| ---: | ---: | ---: | ---: |")
        print(f"| {r['start_s']:.1f} | {r['close_s']:.1f} | {r['reload_s']:.2f} | {r['rss_gib']:.2f} |")
    if "sft" in args.parts:
        r = bench_sft(model_dir, task, recipe, args)
        t = recipe.train
        print(
            f"\nSFT ({r['examples']} examples x {t.epochs} epochs, batch {t.batch_size}, frozen: {list(t.freeze)}; "
            f"tokens/s, median of {args.reps})\n"
        )
        print("| measure | rsft-gen SFT phase (TRL) | plain PyTorch loop | ratio |")
        print("| --- | ---: | ---: | ---: |")
        print(
            f"| whole phase (load, tokenise, train, save) | {r['ours_phase']:.0f} | {r['base_phase']:.0f} | "
            f"{r['ours_phase'] / r['base_phase']:.2f} |"
        )
        print(
            f"| training loop only | {r['ours_loop']:.0f} | {r['base_loop']:.0f} "
            f"| {r['ours_loop'] / r['base_loop']:.2f} |"
        )


if __name__ == "__main__":  # the vLLM engine's processes are spawned and re-import this module
    main()
