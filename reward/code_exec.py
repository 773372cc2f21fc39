"""code_exec: runs model-written Python against a data set's tests, sandboxed; the fraction of tests passed.

The tests column (`column=`, default "tests") holds, per prompt, either a list
of test snippets (MBPP's `test_list` style: ["assert f(1) == 2", ...]), each
run separately after the solution so the score is the fraction that pass, or
one string run as a single all-or-nothing test (HumanEval's `check(...)`
style). A string that is a JSON list is read as a list.

The code is the last ```python fenced block of the completion, else the last
``` block, else the whole completion; with `prefix_prompt=True` the prompt is
put in front (completions that continue a function signature).

Each program runs in rsft_gen.sandbox: inside bubblewrap (read-only Python
runtime, private /tmp, no network, no capabilities, own user/pid/IPC
namespaces, seccomp), one fresh forked process per program with a wall-clock
timeout (`timeout_s=`) and memory limit (`memory_mb=`); `workers=` sandboxes
in parallel (default: every core). Tests of the forms `assert f(x) == y`,
`assert math.isclose(f(x), y)`, `assert f(x) is True`, ... and HumanEval
`check(candidate)` functions made of them are split: only the calls run in the
sandbox and this process compares their values with the expected ones. Other
tests run whole inside the sandbox (weaker: the program could fake them); their
count is logged and sent as the metric `unparsed_tests` through `log_metric`
when the caller passes one. A program that times out, crashes, fails to load
or makes a forbidden system call scores 0.0. Prompts with no tests get None.

Without bubblewrap installed it stops with a one-line error, unless the recipe
sets `isolation: none` (plain child processes, no OS sandbox; logged as a
warning on every call).

>>> code_exec(["add"] * 3,
...           ["```python\\ndef add(a, b):\\n    return a + b\\n```", "def add(a, b): return a - b",
...            "while True: pass"],
...           tests=[["assert add(1, 2) == 3", "assert add(0, 0) == 0"]] * 3, timeout_s=1)
[1.0, 0.5, 0.0]
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter

from reward.exact_match import text_of
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


def code_exec(
    prompts,
    completions,
    column: str = "tests",
    timeout_s: float = 5.0,
    memory_mb: int = 1024,
    workers: int | None = None,
    prefix_prompt: bool = False,
    site_packages: bool = False,
    isolation: str = "bwrap",
    log_metric=None,
    **columns,
) -> list[float | None]:
    """Fraction of the prompt's tests the completion's code passes (None when there are no tests)."""
    if column not in columns:
        raise KeyError(f"code_exec: no column '{column}' in the prompt set (have: {', '.join(sorted(columns))})")
    tests = [_tests(t) for t in columns[column]]
    todo = [i for i, t in enumerate(tests) if t]
    jobs = [
        ((text_of(prompts[i]) if prefix_prompt else "") + extract_code(text_of(completions[i])), tests[i]) for i in todo
    ]
    limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb, site_packages=site_packages, isolation=isolation)
    results = run_many(jobs, limits, workers=workers, progress=len(jobs) >= 64)
    out: list[float | None] = [None] * len(completions)
    for i, r in zip(todo, results):
        out[i] = r.fraction
    statuses = Counter(r.status for r in results)
    unparsed = sum(r.unparsed for r in results)
    if results:
        log.info(
            "code_exec: %d programs: %s; %d of %d tests could not be split and ran whole in the sandbox "
            "(weaker: the program could fake them)",
            len(results),
            ", ".join(f"{k} {v}" for k, v in statuses.most_common()),
            unparsed,
            sum(r.total for r in results),
        )
    if log_metric is not None:
        log_metric("unparsed_tests", unparsed)
    return out
