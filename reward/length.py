"""length: a length penalty, 0.0 up to `target` and falling linearly to -1.0 at `max_length`.

Length counts `unit="chars"` (default) or `"words"`. Add it with a small weight
next to a correctness reward to prefer shorter accepted solutions, e.g.
`rewards=[{name: exact_match}, {name: length, weight: 0.1, kwargs: {target: 200, max_length: 800}}]`.

>>> length(["q"] * 3, ["short", "x" * 150, "x" * 500], target=100, max_length=200)
[0.0, -0.5, -1.0]
>>> length(["q"], ["one two three four"], unit="words", target=2, max_length=6)
[-0.5]
"""

from __future__ import annotations

from reward.exact_match import text_of


def length(prompts, completions, target: int = 512, max_length: int = 2048, unit: str = "chars") -> list[float]:
    """0.0 for length <= target, then linear down to -1.0 at max_length (and beyond)."""
    if max_length <= target:
        raise ValueError(f"length: max_length ({max_length}) must be larger than target ({target})")
    if unit not in ("chars", "words"):
        raise ValueError(f"length: unit is '{unit}'; use chars or words")
    out = []
    for text in map(text_of, completions):
        n = len(text) if unit == "chars" else len(text.split())
        out.append(0.0 - min(1.0, max(0.0, (n - target) / (max_length - target))))  # 0.0 - : no -0.0
    return out
