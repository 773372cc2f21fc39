"""format: 1.0 when a completion has the required shape, else 0.0.

Give `pattern=` (a regex; it must match the whole completion with `full=True`,
the default, or anywhere with `full=False`), and/or `tags=` (each tag, e.g.
"think", must appear as exactly one <tag>...</tag> pair, in the given order).
With `partial=True` the score is the fraction of tags present instead.

>>> format_reward(["q"] * 2, ["<think>a</think><answer>4</answer>", "<answer>4</answer>"], tags=["think", "answer"])
[1.0, 0.0]
>>> format_reward(["q"], ["<answer>4</answer>"], tags=["think", "answer"], partial=True)
[0.5]
>>> format_reward(["q"] * 2, ["The answer is 12.", "12"], pattern=r"The answer is -?\\d+\\.")
[1.0, 0.0]
"""

from __future__ import annotations

import re

from reward.exact_match import text_of


def _tag_ok(text: str, tag: str) -> tuple[bool, int]:
    opens = [m.start() for m in re.finditer(f"<{re.escape(tag)}>", text)]
    closes = [m.start() for m in re.finditer(f"</{re.escape(tag)}>", text)]
    ok = len(opens) == 1 and len(closes) == 1 and opens[0] < closes[0]
    return ok, opens[0] if ok else -1


def format_reward(
    prompts,
    completions,
    pattern: str | None = None,
    tags: list[str] | None = None,
    full: bool = True,
    partial: bool = False,
) -> list[float]:
    """Regex and/or tag checks; 1.0 when all pass (or the fraction of tags with partial=True)."""
    if pattern is None and not tags:
        raise ValueError("the 'format' reward needs pattern= and/or tags=")
    regex = re.compile(pattern, re.DOTALL) if pattern is not None else None
    out = []
    for text in map(text_of, completions):
        if regex is not None and not (regex.fullmatch(text.strip()) if full else regex.search(text)):
            out.append(0.0)
            continue
        if not tags:
            out.append(1.0)
            continue
        found = [_tag_ok(text, t) for t in tags]
        if partial:
            out.append(sum(ok for ok, _ in found) / len(tags))
        else:
            positions = [pos for _, pos in found]
            in_order = all(ok for ok, _ in found) and positions == sorted(positions)
            out.append(1.0 if in_order else 0.0)
    return out
