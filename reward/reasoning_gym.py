"""reasoning_gym: the task's own verifier (`score_answer`) on the answer extracted from a completion.

Rows come from `data.task: reasoning_gym` (rsft_gen/data_reasoning_gym.py), which
stores each entry (question, oracle answer, metadata), its task name and config;
the task's dataset object is rebuilt once per (task, config) and its
`score_answer(answer, entry)` decides. Scores are the verifier's own: 1.0 for a
right answer, partial credit where the task gives it, 0.0 when nothing could be
extracted.

`extract=` picks the answer out of the completion, with the same extraction
rules eval uses (reward.exact_match.extract_answer): "answer_tags" (the last
<answer>...</answer>, reasoning-gym's own convention), "last_line", "boxed",
"last_number", "strip", or "regex" with `pattern=`.

>>> import json
>>> entry = json.dumps({"question": "2 + 3 =", "answer": "5", "metadata": {}})
>>> reasoning_gym(None, ["so <answer>5</answer>", "<answer>6</answer>", "no tags"], rg_task=["chain_sum"] * 3,
...               rg_config=["{}"] * 3, rg_entry=[entry] * 3)
[1.0, 0.0, 0.0]
>>> reasoning_gym(None, ["2 + 3 = 5"], rg_task=["chain_sum"], rg_config=["{}"], rg_entry=[entry], extract="last_number")
[1.0]
"""

from __future__ import annotations

import json
from functools import lru_cache

from reward.exact_match import extract_answer, text_of


@lru_cache(maxsize=256)
def _scorer(task: str, config: str):
    import reasoning_gym

    return reasoning_gym.create_dataset(task, size=1, seed=0, **json.loads(config)).score_answer


def reasoning_gym(
    prompts,
    completions,
    rg_task,
    rg_config,
    rg_entry,
    extract: str = "answer_tags",
    pattern: str | None = None,
    **columns,
) -> list[float]:
    """The reasoning-gym task's score_answer on each completion's extracted answer (0.0 if none)."""
    out = []
    for completion, task, config, entry in zip(completions, rg_task, rg_config, rg_entry):
        answer = extract_answer(text_of(completion), extract, pattern)
        out.append(0.0 if answer is None else float(_scorer(task, config)(answer, json.loads(entry))))
    return out
