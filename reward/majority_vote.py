"""majority_vote: label-free self-consistency. 1.0 when a completion's answer is its prompt's majority answer.

Answers are extracted as in exact_match (`extract=`, `pattern=`; default
"last_number") and grouped by `group_ids` (the prompt each completion belongs
to). Completions without an answer score 0.0 and do not vote.
- `min_agreement`: the majority answer must hold at least this fraction of the
  group's completions (all of them, answered or not); else nobody scores 1.
- `ties`: "all" (every tied answer counts as the majority), "none" (a tie means
  no majority).
- `no_majority`: the score when there is no majority (0.0; None = no opinion).

>>> majority_vote(["q"] * 4 + ["r"] * 2, ["is 3", "is 3", "is 4", "none", "7", "8"], group_ids=[0, 0, 0, 0, 1, 1])
[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
>>> majority_vote(["q"] * 4, ["3", "3", "4", "5"], group_ids=[0] * 4, min_agreement=0.6)
[0.0, 0.0, 0.0, 0.0]
>>> majority_vote(["q"] * 2, ["7", "8"], group_ids=[1, 1], ties="none", no_majority=None)
[None, None]
"""

from __future__ import annotations

from collections import Counter, defaultdict

from reward.exact_match import extract_answer, text_of


def majority_vote(
    prompts,
    completions,
    group_ids,
    extract: str = "last_number",
    pattern: str | None = None,
    min_agreement: float = 0.0,
    ties: str = "all",
    no_majority: float | None = 0.0,
) -> list[float | None]:
    """1.0 for completions whose extracted answer is the (configurable) majority of their group."""
    if ties not in ("all", "none"):
        raise ValueError(f"majority_vote: ties is '{ties}'; use all or none")
    answers = [extract_answer(text_of(c), extract, pattern) for c in completions]
    groups: dict = defaultdict(list)
    for i, g in enumerate(group_ids):
        groups[g].append(i)
    out: list[float | None] = [0.0] * len(completions)
    for members in groups.values():
        votes = Counter(answers[i] for i in members if answers[i] is not None)
        top = max(votes.values(), default=0)
        winners = {a for a, n in votes.items() if n == top}
        if top == 0 or top < min_agreement * len(members) or (ties == "none" and len(winners) > 1):
            for i in members:
                out[i] = no_majority
            continue
        for i in members:
            out[i] = 1.0 if answers[i] in winners else 0.0
    return out
