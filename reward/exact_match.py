"""exact_match: 1.0 when the answer extracted from a completion equals the gold answer.

Extraction modes (`extract=`): "strip" (the whole completion, whitespace
stripped), "last_number", "boxed" (the last \\boxed{...}), "gsm8k" (after
'####'), "answer_tags" (the last <answer>...</answer>), "last_line" (the last
non-empty line), or "regex" with `pattern=` (the last match's first group,
else the whole match). The same rules define "the answer" for maj@k and dedup
(eval.answer, rsft_gen/answers.py).
Chat recipes pass completions as [{"role": "assistant", "content": text}];
the text is read out of them.
When both sides read as numbers they are compared as numbers ("41.0" == "41",
"1,234" == "1234"); otherwise as stripped strings.

>>> exact_match(["1+2="], ["3"], answer=["3"])
[1.0]
>>> exact_match(["q"], ["so it is 41.0 apples"], answer=["41"], extract="last_number")
[1.0]
>>> exact_match(["q"], ["\\\\boxed{7} not \\\\boxed{8}"], answer=[8], extract="boxed")
[1.0]
>>> exact_match(["q"], ["work\\n#### 1,234"], answer=["1234"], extract="gsm8k")
[1.0]
>>> exact_match(["q"], ["Answer: Paris."], answer=["Paris"], extract="regex", pattern=r"Answer: (\\w+)")
[1.0]
>>> exact_match(["q"], ["from 10 to -3.50, so"], answer=["-3.5"], extract="last_number")
[1.0]
>>> exact_match(["q", "q"], ["no number", "12345678901234567891"], answer=["5", "12345678901234567890"],
...             extract="last_number")
[0.0, 0.0]
>>> exact_match(["q"], ["<think>5? no</think><answer> 6 </answer>"], answer=["6"], extract="answer_tags")
[1.0]
>>> exact_match(["q"], [[{"role": "assistant", "content": "Let me see.\\n7 + 5 = 12\\n\\n12\\n"}]], answer=["12"],
...             extract="last_line")
[1.0]
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

# The last number, found by matching the mirrored pattern of -?\d[\d,]*(?:\.\d+)? on the
# reversed text: one left-to-right search instead of finding every number.
_LAST_NUMBER_REVERSED = re.compile(r",*((?:\d+\.)?[\d,]*\d-?)")
_NUMERIC = re.compile(r"[-+]?\d[\d,]*(?:\.\d*)?|[-+]?\.\d+")


@lru_cache(maxsize=1 << 16)  # answers repeat a lot; this keeps 100k completions well under a second
def _normalise_number(s: str) -> str:
    """'1,234.50' -> '1234.5'; exact (Decimal), so large integers stay distinct. Non-numbers unchanged."""
    s = s.strip()
    if s.isdigit():
        return str(int(s))
    if not _NUMERIC.fullmatch(s):
        return s
    try:
        d = Decimal(s.replace(",", ""))
    except InvalidOperation:
        return s
    return str(int(d)) if d == d.to_integral_value() else format(d.normalize(), "f")


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


_ANSWER_TAGS = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def text_of(item) -> str:
    """A completion or prompt as text: a plain string, or TRL's conversational form (the last message's content)."""
    return item if isinstance(item, str) else str(item[-1]["content"])


def extract_answer(text: str, extract: str = "strip", pattern: str | None = None) -> str | None:
    """The answer part of a completion (numbers normalised), or None when there is none."""
    if extract == "strip":
        got = text.strip()
    elif extract == "last_number":
        m = _LAST_NUMBER_REVERSED.search(text[::-1])
        got = m.group(1)[::-1] if m else None
    elif extract == "boxed":
        got = _last_boxed(text)
    elif extract == "gsm8k":
        got = text.split("####")[-1].strip().split("\n")[0] if "####" in text else None
    elif extract == "answer_tags":
        tags = _ANSWER_TAGS.findall(text)
        got = tags[-1].strip() if tags else None
    elif extract == "last_line":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        got = lines[-1] if lines else None
    elif extract == "regex":
        if not pattern:
            raise ValueError("extract='regex' needs pattern=...")
        m = re.findall(pattern, text)
        got = (m[-1][0] if isinstance(m[-1], tuple) else m[-1]) if m else None
    else:
        raise ValueError(
            f"unknown extract mode '{extract}'; use strip, last_number, boxed, gsm8k, answer_tags, last_line or regex"
        )
    return None if got is None else _normalise_number(got)


def exact_match(prompts, completions, answer, extract: str = "strip", pattern: str | None = None) -> list[float]:
    """1.0 if the extracted answer equals the gold answer (numbers compared as numbers), else 0.0."""
    out = []
    for completion, gold in zip(completions, answer):
        got = extract_answer(text_of(completion), extract, pattern)
        out.append(1.0 if got is not None and got == _normalise_number(str(gold)) else 0.0)
    return out
