"""Benchmark the rewards whose speed matters: exact_match over 100k completions, code_exec throughput.

    python eval/bench_rewards.py                 # all cores
    python eval/bench_rewards.py --programs 400 --workers 4

Prints a markdown table (the numbers for the README).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time

from reward.code_exec import code_exec
from reward.exact_match import exact_match


def bench_exact_match(n: int) -> list[tuple[str, str]]:
    rng = random.Random(0)
    golds = [str(rng.randint(0, 10_000)) for _ in range(n)]
    completions = [f"Step 1: {rng.randint(1, 99)} + {rng.randint(1, 99)} = {rng.randint(1, 199)}.\n"
                   f"Step 2: so the total is {g if rng.random() < 0.5 else rng.randint(0, 10_000)}.\n#### {g}" for g in golds]
    rows = []
    for extract in ("gsm8k", "last_number", "strip", "boxed"):
        start = time.perf_counter()
        exact_match(None, completions, answer=golds, extract=extract)
        rows.append((f"exact_match, {n:,} completions, extract={extract}", f"{time.perf_counter() - start:.3f} s"))
    return rows


def bench_code_exec(programs: int, workers: int) -> list[tuple[str, str]]:
    rng = random.Random(0)
    tests = ["assert fib(0) == 0", "assert fib(1) == 1", "assert fib(10) == 55", "assert fib(20) == 6765"]
    good = "```python\ndef fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n```"
    bad = "```python\ndef fib(n):\n    return n\n```"
    completions = [good if rng.random() < 0.7 else bad for _ in range(programs)]
    start = time.perf_counter()
    scores = code_exec(["q"] * programs, completions, tests=[tests] * programs, workers=workers, timeout_s=5)
    seconds = time.perf_counter() - start
    return [(f"code_exec, {programs} programs x {len(tests)} tests, {workers} workers",
             f"{programs / seconds:.1f} programs/s ({seconds:.1f} s, mean score {sum(scores) / programs:.2f})")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--completions", type=int, default=100_000)
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()
    rows = bench_exact_match(args.completions) + bench_code_exec(args.programs, args.workers)
    print(f"\n{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}\n")
    print("| benchmark | result |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
