"""Generation throughput: raw vllm.LLM.generate vs our vLLM backend vs our HF backend.

    python eval/bench_generate.py                      # tiny model and a ~25M-parameter Llama, ~5 min on 2 CPU cores
    python eval/bench_generate.py --models tiny --prompts 64

All three run in this one process, on the same model, prompts and sampling
settings (n samples per prompt, temperature, top-p, max new tokens). Raw vLLM
and our backend share one engine and alternate, median of `--reps` each. Our
backend always asks the engine for a seed per prompt (reproducible candidates)
and, when the recipe needs log q (generate.log_q; by default only for the
likelihood-ratio rule), for the sampled tokens' log-probs. "ours" is the
default (no log q, as for the default recipe's threshold rule); "ours + log q"
asks for them, and "raw + logprobs + seeds" is a plain call asking for the
same, so ours + log q / that column is the cost of our wrapper alone. The HF
backend runs after the engine is shut down, so it has the cores to itself.
Also prints what each engine lifecycle costs: start, shutdown, in-place reload,
and the memory an engine kept alive would hold during training. Models are
random-init (rsft_gen.tiny_model); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import tempfile
import time
from pathlib import Path

import psutil
from transformers import LlamaForCausalLM

from rsft_gen.config import TinyModelConfig
from rsft_gen.generate import SamplingSettings
from rsft_gen.tiny_model import build_tiny_model

# A ~25M-parameter Llama: 6 layers of width 512 over the char tokenizer.
MEDIUM = TinyModelConfig(
    hidden_size=512, num_layers=6, num_heads=8, intermediate_size=2048, max_position_embeddings=256
)


def make_model(name: str, root: Path) -> tuple[Path, int]:
    out = root / name
    if name == "tiny":
        build_tiny_model(out, TinyModelConfig(), seed=0)
    else:
        build_tiny_model(out, MEDIUM, seed=0)
    params = sum(p.numel() for p in LlamaForCausalLM.from_pretrained(out).parameters())
    return out, params


def engine_rss_gib() -> float:
    """Resident memory of this process's children: the engine core and its workers."""
    return sum(c.memory_info().rss for c in psutil.Process().children(recursive=True)) / 2**30


def timed(fn) -> tuple[float, int]:
    start = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - start, tokens


def bench_model(name: str, root: Path, args) -> dict:
    from vllm import SamplingParams

    from rsft_gen.generate_hf import HFGenerator
    from rsft_gen.generate_vllm import ReloadingVLLMGenerator

    model_dir, params = make_model(name, root)
    num_prompts = args.prompts or {"tiny": 512, "medium": 64}[name]
    prompts = [f"{(7 * i) % 100}+{(13 * i) % 100}=" for i in range(num_prompts)]
    ids = list(range(len(prompts)))
    settings = SamplingSettings(
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=0,
        log_q=False,
    )
    settings_q = dataclasses.replace(settings, log_q=True)
    raw_params = SamplingParams(
        n=args.n, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_new_tokens
    )

    gen = ReloadingVLLMGenerator(str(model_dir), {"kv_cache_memory_bytes": 256 << 20})  # generates like VLLMGenerator
    # What our backend asks the engine for on top: the sampled tokens' log-probs and a seed per prompt.
    same_params = [
        SamplingParams(
            n=args.n,
            temperature=args.temperature,
            top_p=args.top_p,
            max_tokens=args.max_new_tokens,
            logprobs=0,
            flat_logprobs=True,
            detokenize=False,
            seed=1000 * i,
        )
        for i in ids
    ]

    def raw():
        return sum(len(c.token_ids) for o in gen.llm.generate(prompts, raw_params, use_tqdm=False) for c in o.outputs)

    def raw_same():
        return sum(len(c.token_ids) for o in gen.llm.generate(prompts, same_params, use_tqdm=False) for c in o.outputs)

    ours = lambda: sum(c.num_tokens for c in gen.generate(ids, prompts, settings, progress=False))  # noqa: E731
    ours_q = lambda: sum(c.num_tokens for c in gen.generate(ids, prompts, settings_q, progress=False))  # noqa: E731
    gen.llm.generate(prompts[:8], raw_params, use_tqdm=False)  # warm-up: first calls pay one-off costs
    gen.llm.generate(prompts[:8], same_params[:8], use_tqdm=False)
    gen.generate(ids[:8], prompts[:8], settings_q, progress=False)
    rates = {"raw": [], "raw_same": [], "ours": [], "ours_q": []}
    for _ in range(args.reps):  # alternate, so drifting load from other processes hits all alike
        for key, fn in (("raw", raw), ("ours", ours), ("raw_same", raw_same), ("ours_q", ours_q)):
            seconds, tokens = timed(fn)
            rates[key].append(tokens / seconds)
    median = {key: statistics.median(r) for key, r in rates.items()}
    rss = engine_rss_gib()
    reload_s, _ = timed(lambda: gen.reload(str(model_dir)) or 0)
    close_s, _ = timed(gen.close)

    hf = HFGenerator(str(model_dir), device="cpu", batch_size=args.hf_batch_size)
    hf.generate(ids[:8], prompts[:8], settings, progress=False)
    hf_rates = []
    for _ in range(args.reps):
        seconds, tokens = timed(lambda: sum(c.num_tokens for c in hf.generate(ids, prompts, settings, progress=False)))
        hf_rates.append(tokens / seconds)
    hf_median = statistics.median(hf_rates)
    hf.close()
    return dict(
        model=name,
        params=params,
        work=f"{num_prompts}x{args.n}x{args.max_new_tokens}",
        raw=median["raw"],
        raw_same=median["raw_same"],
        ours=median["ours"],
        ours_q=median["ours_q"],
        hf=hf_median,
        start_s=gen.start_seconds,
        close_s=close_s,
        reload_s=reload_s,
        rss_gib=rss,
    )


def print_tables(rows: list[dict], args) -> None:
    print(
        f"\nGeneration throughput (generated tokens/s; temperature {args.temperature}, top-p {args.top_p}; "
        f"median of {args.reps})\n"
    )
    print(
        "| model | parameters | prompts x n x max new tokens | raw vLLM | our vLLM backend | ours / raw "
        "| raw vLLM + logprobs + seeds | ours + log q | ours + log q / raw + logprobs + seeds | ours + log q / raw "
        "| our HF backend |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['work']} | {r['raw']:.0f} | {r['ours']:.0f} "
            f"| {r['ours'] / r['raw']:.3f} | {r['raw_same']:.0f} | {r['ours_q']:.0f} "
            f"| {r['ours_q'] / r['raw_same']:.3f} | {r['ours_q'] / r['raw']:.3f} | {r['hf']:.0f} |"
        )
    print("\nEngine lifecycle costs (seconds; RSS = memory an engine kept alive holds while the trainer runs)\n")
    print("| model | engine start | shutdown | in-place weight reload | engine RSS (GiB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['start_s']:.1f} | {r['close_s']:.1f} | {r['reload_s']:.2f} | {r['rss_gib']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "medium"], choices=["tiny", "medium"])
    ap.add_argument("--prompts", type=int, default=None, help="default: 512 for tiny, 64 for medium")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--hf-batch-size", type=int, default=256)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="bench_generate.") as tmp:
        rows = []
        for name in args.models:
            rows.append(bench_model(name, Path(tmp), args))
            print_tables(rows, args)  # partial results survive an interrupted run


if __name__ == "__main__":  # the engine's processes are spawned and re-import this module
    main()
