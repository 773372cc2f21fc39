"""exact_match: 1.0 when the answer extracted from a completion equals the gold answer.

Extraction modes (`extract=`): "strip" (the whole completion, whitespace
stripped), "last_number", "boxed" (the last \\boxed{...}), "gsm8k" (after
'####'), or "regex" with `pattern=` (its first group, else the whole match).

>>> exact_match(["1+2="], ["3"], answer=["3"])
[1.0]
>>> exact_match(["q"], ["so it is 41.0 apples"], answer=["41"], extract="last_number")
[1.0]
>>> exact_match(["q"], ["\\\\boxed{7} not \\\\boxed{8}"], answer=["8"], extract="boxed")
[1.0]
>>> exact_match(["q"], ["work\\n#### 1,234"], answer=["1234"], extract="gsm8k")
[1.0]
>>> exact_match(["q"], ["no number"], answer=["5"], extract="last_number")
[0.0]
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _normalise_number(s: str) -> str:
    s = s.replace(",", "").strip()
    try:
        value = float(s)
    except ValueError:
        return s
    return str(int(value)) if value.is_integer() else repr(value)


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):  # braces nest inside \boxed{...}
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract_answer(text: str, extract: str = "strip", pattern: str | None = None) -> str | None:
    """The answer part of a completion, or None when there is none."""
    if extract == "strip":
        return text.strip()
    if extract == "last_number":
        found = _NUMBER.findall(text)
        return _normalise_number(found[-1]) if found else None
    if extract == "boxed":
        boxed = _last_boxed(text)
        return boxed.strip() if boxed is not None else None
    if extract == "gsm8k":
        if "####" not in text:
            return None
        return _normalise_number(text.split("####")[-1].strip().split("\n")[0])
    if extract == "regex":
        if not pattern:
            raise ValueError("exact_match: extract='regex' needs pattern=...")
        m = re.findall(pattern, text)
        if not m:
            return None
        last = m[-1]
        return (last[0] if isinstance(last, tuple) else last).strip()
    raise ValueError(f"exact_match: unknown extract mode '{extract}'; use strip, last_number, boxed, gsm8k or regex")


def exact_match(prompts, completions, answer, extract: str = "strip", pattern: str | None = None, **_) -> list[float]:
    """1.0 if the extracted answer equals the gold answer (numbers compared normalised), else 0.0."""
    numeric = extract in ("last_number", "gsm8k")
    out = []
    for completion, gold in zip(completions, answer):
        got = extract_answer(completion, extract, pattern)
        gold = str(gold).strip()
        if numeric:
            gold = _normalise_number(gold)
        out.append(1.0 if got is not None and got == gold else 0.0)
    return out
