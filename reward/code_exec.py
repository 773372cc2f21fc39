"""code_exec: runs model-written Python against a data set's tests, sandboxed; the fraction of tests passed.

The tests column (`column=`, default "tests") holds, per prompt, either a list
of test snippets (MBPP's `test_list` style: ["assert f(1) == 2", ...]), each
run separately after the solution so the score is the fraction that pass, or
one string run as a single all-or-nothing test (HumanEval's `check(...)`
style). A string that is a JSON list is read as a list.

The code is the last ```python fenced block of the completion, else the last
``` block, else the whole completion; with `prefix_prompt=True` the prompt is
put in front (completions that continue a function signature).

Each program runs in rsft_gen.sandbox: its own process group, wall-clock
timeout (`timeout_s=`), memory limit (`memory_mb=`), no fork, no network,
writes only in a private temporary directory, the process tree killed after;
`workers=` of them in parallel (default: every core). A program that times
out, crashes, exits before the tests, or tries something the sandbox forbids
scores 0.0. Prompts with no tests get None (no opinion).

>>> code_exec(["add"] * 3,
...           ["```python\\ndef add(a, b):\\n    return a + b\\n```", "def add(a, b): return a - b", "while True: pass"],
...           tests=[["assert add(1, 2) == 3", "assert add(0, 0) == 0"]] * 3, timeout_s=1)
[1.0, 0.5, 0.0]
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter

from rsft_gen.sandbox import Limits, run_many

log = logging.getLogger(__name__)
_FENCED_PY = re.compile(r"```(?:python|py|python3)[ \t]*\n(.*?)```", re.DOTALL)
_FENCED = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(completion: str) -> str:
    """The last ```python block, else the last ``` block, else the completion itself."""
    for regex in (_FENCED_PY, _FENCED):
        blocks = regex.findall(completion)
        if blocks:
            return blocks[-1]
    return completion


def _tests(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                return [str(t) for t in json.loads(value)]
            except json.JSONDecodeError:
                pass
        return [value] if value.strip() else []
    return [str(t) for t in value]  # list, tuple, or the numpy array parquet gives back


def code_exec(prompts, completions, column: str = "tests", timeout_s: float = 5.0, memory_mb: int = 1024,
              workers: int | None = None, prefix_prompt: bool = False, site_packages: bool = False,
              **columns) -> list[float | None]:
    """Fraction of the prompt's tests the completion's code passes (None when there are no tests)."""
    if column not in columns:
        raise KeyError(f"code_exec: no column '{column}' in the prompt set (have: {', '.join(sorted(columns))})")
    tests = [_tests(t) for t in columns[column]]
    todo = [i for i, t in enumerate(tests) if t]
    jobs = [((prompts[i] if prefix_prompt else "") + extract_code(completions[i]), tests[i]) for i in todo]
    limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb, site_packages=site_packages)
    results = run_many(jobs, limits, workers=workers, progress=len(jobs) >= 64)
    out: list[float | None] = [None] * len(completions)
    for i, r in zip(todo, results):
        out[i] = r.fraction
    statuses = Counter(r.status for r in results)
    if results:
        log.info("code_exec: %d programs: %s", len(results), ", ".join(f"{k} {v}" for k, v in statuses.most_common()))
    return out
