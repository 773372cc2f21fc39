"""One definition of "correct" (eval.correct) and one of "the answer" (eval.answer).

    from rsft_gen.answers import answer_rule, correct_rule
    correct = correct_rule(recipe)
    ok = correct.judge(candidates)           # scores the one reward that decides, -> bool per candidate
    ok = correct.mask(scored)                # a frame already scored with all of the recipe's rewards
    answer = answer_rule(recipe)             # None: the recipe defines no answer
    answer.of("... so \\boxed{7}")            # "7" with eval.answer.extract: boxed

Eval accuracy, pass@k and maj@k (rsft_gen/evaluate.py, metrics.py), dedup by
answer and the difficulty filter (select.py) all read these two, so they can
not disagree. Correct: the reward `eval.correct.reward` (default: the first
one) is >= `eval.correct.threshold` (default 1.0); its own value, not its
weighted sum, so a correctness reward kept at weight 0 still decides. The
answer: `eval.answer.extract` with reward.exact_match.extract_answer's rules;
`auto` (the default) takes the extraction of the first reward that extracts
answers, else there is none, and maj@k is not reported: voting on whole
chain-of-thought completions, which are almost all distinct, would be pass@1
under another name.
"""

from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rsft_gen.config import Recipe, RewardSpec

EXTRACTS = ("strip", "last_number", "boxed", "gsm8k", "answer_tags", "last_line", "regex")
EXTRACTING = (
    "exact_match",
    "majority_vote",
    "reasoning_gym",
)  # built-ins whose `extract` defines the answer under auto


@dataclass(frozen=True)
class CorrectRule:
    spec: RewardSpec  # the reward that decides
    column: str  # its column in a frame scored with all of the recipe's rewards ("reward/<name>", "reward/<name>#2")
    threshold: float

    def mask(self, scored: pd.DataFrame, column: str | None = None) -> np.ndarray:
        """Correct per row: the reward's value >= threshold (no opinion, NaN, is not correct)."""
        values = scored[column or self.column].to_numpy(dtype=float)
        return np.nan_to_num(values, nan=-np.inf) >= self.threshold

    def judge(self, cands: pd.DataFrame, state=None) -> np.ndarray:
        """Score the candidates with the deciding reward alone, and say which are correct."""
        from rsft_gen.rewards import score

        scored, _ = score(cands, [self.spec], state)
        return self.mask(scored, f"reward/{self.spec.name}")


@dataclass(frozen=True)
class AnswerRule:
    extract: str  # one of EXTRACTS
    pattern: str | None = None

    def of(self, text: str) -> str | None:
        from reward.exact_match import extract_answer

        return extract_answer(str(text), self.extract, self.pattern)


def reward_columns(specs: list[RewardSpec]) -> list[str]:
    """Each reward's column, as rewards.score names them: reward/<name>, then reward/<name>#2, ... for repeats."""
    out: list[str] = []
    for spec in specs:
        col, k = f"reward/{spec.name}", 2
        while col in out:
            col, k = f"reward/{spec.name}#{k}", k + 1
        out.append(col)
    return out


def correct_rule(recipe: Recipe) -> CorrectRule:
    cfg, columns = recipe.eval.correct, reward_columns(recipe.rewards)
    i = 0 if cfg.reward is None else columns.index(f"reward/{cfg.reward}")  # a missing name was refused by check()
    return CorrectRule(recipe.rewards[i], columns[i], cfg.threshold)


def answer_rule(recipe: Recipe) -> AnswerRule | None:
    cfg = recipe.eval.answer
    if cfg.extract == "none":
        return None
    if cfg.extract != "auto":
        return AnswerRule(cfg.extract, cfg.pattern)
    for spec in recipe.rewards:
        if "extract" in spec.kwargs:
            return AnswerRule(spec.kwargs["extract"], spec.kwargs.get("pattern"))
        if spec.name in EXTRACTING:  # its default extraction
            from rsft_gen.rewards import load

            default = inspect.signature(load(spec.name)).parameters["extract"].default
            return AnswerRule(default, spec.kwargs.get("pattern"))
    return None


def check(recipe: Recipe) -> list[tuple[str, str]]:
    """(key, message) for each problem with eval.correct / eval.answer; config.validate raises the first."""
    problems = []
    names = [c[len("reward/") :] for c in reward_columns(recipe.rewards)]
    want = recipe.eval.correct.reward
    if want is not None and want not in names:
        close = difflib.get_close_matches(want, names, n=1, cutoff=0.6)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        problems.append(
            (
                "eval.correct.reward",
                f"is '{want}', which is not one of the recipe's rewards ({', '.join(names)}).{hint}",
            )
        )
    extract, pattern = recipe.eval.answer.extract, recipe.eval.answer.pattern
    if extract not in EXTRACTS + ("auto", "none"):
        problems.append(
            ("eval.answer.extract", f"is '{extract}'; choose one of {', '.join(EXTRACTS + ('auto', 'none'))}.")
        )
    elif extract == "regex":
        if not pattern:
            problems.append(
                (
                    "eval.answer.pattern",
                    "is not set; eval.answer.extract: regex needs a pattern (its first group is the answer).",
                )
            )
        else:
            try:
                re.compile(pattern)
            except re.error as e:
                problems.append(("eval.answer.pattern", f"is not a valid regular expression ({e})."))
    elif recipe.select.dedup and recipe.select.dedup_key == "answer" and answer_rule(recipe) is None:
        problems.append(
            (
                "select.dedup_key",
                "is 'answer', but the recipe defines no answer (eval.answer.extract resolves to "
                "none); set eval.answer.extract (e.g. last_number, boxed, answer_tags).",
            )
        )
    return problems
