"""math: 1.0 when a completion's final answer is mathematically equivalent to the gold answer.

Parsing and comparison are math-verify's (`pip install math-verify`, extra
`rsft-gen[math]`): LaTeX and plain expressions, \\boxed{...}, fractions vs
decimals, sets, intervals, equations. A gold answer without $ or \\boxed is read
as LaTeX math first, so "1/2", "\\frac{1}{2}" and "\\{1, 2\\}" all parse.

>>> math_equiv(["q"], ["so the answer is $\\\\boxed{\\\\frac{1}{2}}$"], answer=["0.5"])
[1.0]
>>> math_equiv(["q", "q"], ["$x = 2\\\\sqrt{2}$", "The result is 3."], answer=["\\\\sqrt{8}", "4"])
[1.0, 0.0]
>>> math_equiv(["q"], ["no answer here"], answer=["7"])
[0.0]
"""

from __future__ import annotations

import threading
from functools import lru_cache

from reward.exact_match import text_of


def _timeout() -> int | None:
    # math-verify's timeouts use SIGALRM, which only the main thread can set.
    return 5 if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=1 << 14)
def _parse_gold(gold: str):
    from math_verify import parse

    # Gold answers are usually bare LaTeX (\frac{3}{4}, \{1, 2\}): read them as math first.
    parsed = parse(f"${gold}$", parsing_timeout=_timeout()) if "$" not in gold and "\\boxed" not in gold else None
    return parsed or parse(gold, parsing_timeout=_timeout())


def math_equiv(prompts, completions, answer, float_rounding: int = 6) -> list[float]:
    """1.0 if math-verify finds the completion's answer equal to the gold answer, else 0.0."""
    try:
        from math_verify import parse, verify
    except ImportError as e:
        raise ImportError("the 'math' reward needs math-verify: pip install 'rsft-gen[math]'") from e
    out = []
    for completion, gold in zip(completions, answer):
        gold_parsed = _parse_gold(str(gold))
        pred = parse(text_of(completion), parsing_timeout=_timeout())
        ok = (
            bool(gold_parsed)
            and bool(pred)
            and verify(gold_parsed, pred, float_rounding=float_rounding, timeout_seconds=_timeout())
        )
        out.append(1.0 if ok else 0.0)
    return out
