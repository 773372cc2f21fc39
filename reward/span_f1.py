"""span_f1: F1 between the set of items a completion lists and the gold set.

For extraction tasks written as generation (NER, keyphrases, slot filling).
Items are split on `sep` (a regex; default newlines, commas and semicolons)
unless `pattern=` is given, whose matches (first group if any) are the items.
Items are compared lower-cased with whitespace collapsed. The gold column
(`column=`, default "answer") holds a list of items or a string split the same
way. Both sets empty scores 1.0.

>>> span_f1(["q"], ["Paris, Berlin, Rome"], answer=[["paris", "berlin"]])
[0.8]
>>> span_f1(["q"], ["PER: Ada Lovelace\\nPER: Alan Turing"], answer=["Alan  Turing"], pattern=r"PER: (.+)")
[0.6666666666666666]
>>> span_f1(["q", "q"], ["none", ""], answer=[[], []], pattern=r"PER: (.+)")
[1.0, 1.0]
"""

from __future__ import annotations

import re

from reward.exact_match import text_of


def _items(value, sep: str, pattern: str | None) -> set[str]:
    if isinstance(value, str):
        if pattern is not None:
            found = re.findall(pattern, value)
            parts = [f[0] if isinstance(f, tuple) else f for f in found]
        else:
            parts = re.split(sep, value)
    elif value is None:
        parts = []
    else:  # a list (or a numpy array, as parquet gives back)
        parts = [str(v) for v in value]
    return {" ".join(p.lower().split()) for p in parts} - {""}


def span_f1(
    prompts, completions, column: str = "answer", sep: str = r"[\n,;]", pattern: str | None = None, **columns
) -> list[float]:
    """Set F1 of predicted vs gold items, in [0, 1].

    (**columns: prompt-set columns only; see rsft_gen/reward_call.py)
    """
    if column not in columns:
        raise KeyError(f"span_f1: no column '{column}' in the prompt set (have: {', '.join(sorted(columns))})")
    out = []
    for completion, gold in zip(completions, columns[column]):
        pred = _items(text_of(completion), sep, pattern)
        gold = _items(gold, sep, None)  # gold strings are split on sep, never by pattern
        if not pred and not gold:
            out.append(1.0)
            continue
        tp = len(pred & gold)
        out.append(0.0 if tp == 0 else 2 * tp / (len(pred) + len(gold)))
    return out
