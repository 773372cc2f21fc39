"""How a reward function is called: TRL's keyword contract, and the load-time check of a recipe's kwargs.

    from rsft_gen.reward_call import Batch, Signature, arguments, check_kwargs
    sig = Signature.of(fn)
    check_kwargs(fn, sig, spec, "module:function")   # RecipeError: a kwarg it does not name (did you mean ...?)
    batch = Batch(candidates_frame)                    # built once, shared by every reward of the call
    values = fn(**arguments(sig, batch.offered(sig) | spec.kwargs | hooks))

Every argument is passed by keyword, as TRL's GRPOTrainer does:
- `prompts`, `completions`: strings; for chat recipes (the frame has the
  `prompt_messages` column) TRL's conversational form: a prompt is its message
  list [system?, user], a completion is [{"role": "assistant", "content": text}];
- `completion_ids`: the sampled token ids, one list per completion;
- every prompt-set column (answer, tests, ...) and `group_ids` (the prompt each
  completion belongs to);
- the recipe's `kwargs` for that reward;
- `trainer_state` (the loop's progress, see RoundState), `log_extra` and
  `log_metric` (TRL's logging hooks) only to a function that names them.
A function taking **kwargs gets all of the first four groups; any other gets
only the names it declares, so `def f(prompts, completions, answer)` works. A
catch-all spelt `**columns` is for prompt-set columns only: such a function
still gets prompts / completions / completion_ids only if it names them, and
its recipe kwargs are still checked.
"""

from __future__ import annotations

import difflib
import inspect
import json
import logging
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Callable

import pandas as pd

from rsft_gen.config import RecipeError, RewardSpec
from rsft_gen.generate import Candidate
from rsft_gen.prompts import MESSAGES

log = logging.getLogger(__name__)
# The candidate's own fields and the prompt (in either form) are not prompt-set columns: rewards get
# them as prompts / completions / completion_ids / group_ids, or not at all.
HIDDEN = frozenset(f.name for f in fields(Candidate)) | {"prompt", MESSAGES}
SET_BY_US = ("prompts", "completions", "completion_ids", "group_ids")
HOOKS = ("trainer_state", "log_extra", "log_metric")  # passed only to functions that name them
COLUMNS_ONLY = "columns"  # the name of a catch-all that takes prompt-set columns only


@dataclass(frozen=True)
class RoundState:
    """What a reward gets as `trainer_state`: the loop's progress, under the names TRL's schedules read."""

    round: int  # 1.. for the reward phase; the evaluated round's index for eval (0: the starting model)
    rounds: int  # the recipe's `rounds`
    phase: str  # "reward" or "eval"

    @property
    def global_step(self) -> int:
        return self.round

    @property
    def max_steps(self) -> int:
        return self.rounds

    @property
    def epoch(self) -> float:
        return float(self.round)


@dataclass(frozen=True)
class Signature:
    params: tuple[str, ...]  # parameters that can be passed by keyword
    required: tuple[str, ...]  # ... of which these have no default
    var_kw: str | None  # the name of its **catch-all, if any

    @classmethod
    def of(cls, fn: Callable) -> "Signature":
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # a callable without a readable signature: give it everything, check nothing
            return cls((), (), "kwargs")
        kinds = inspect.Parameter
        params = [p for p in sig.parameters.values() if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)]
        var_kw = next((p.name for p in sig.parameters.values() if p.kind == kinds.VAR_KEYWORD), None)
        return cls(tuple(p.name for p in params), tuple(p.name for p in params if p.default is p.empty), var_kw)

    @property
    def open(self) -> bool:
        """Takes **kwargs (any name): gets everything TRL passes, and its recipe kwargs cannot be checked."""
        return self.var_kw is not None and self.var_kw != COLUMNS_ONLY


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def check_kwargs(fn: Callable, sig: Signature, spec: RewardSpec, target: str) -> None:
    """A recipe kwarg the reward does not name is an error (unless it takes **kwargs, which we log)."""
    where = f"reward '{spec.name}' ({target})"
    for key in spec.kwargs:
        if key in SET_BY_US or key in HOOKS:
            raise RecipeError(
                f"{where}: rewards[].kwargs.{key} is set by rsft-gen for every call; remove it from the recipe."
            )
    if sig.open:
        if spec.kwargs:
            log.info("%s takes **%s, so its kwargs %s are passed unchecked", where, sig.var_kw, sorted(spec.kwargs))
    else:
        for key in spec.kwargs:
            if key not in sig.params:
                mine = [p for p in sig.params if p not in SET_BY_US and p not in HOOKS]
                raise RecipeError(
                    f"{where} has no parameter '{key}' (rewards[].kwargs.{key}).{_did_you_mean(key, mine)} "
                    f"Its parameters: {', '.join(mine) or 'none'}."
                )
    if not sig.open and not {"completions", "completion_ids"} & set(sig.params):
        raise RecipeError(
            f"{where} takes neither `completions` nor `completion_ids`, so it cannot score anything. If it "
            f"builds the reward function (like trl.rewards:get_soft_overlong_punishment), set factory: true "
            f"in its recipe entry; its kwargs then go to it."
        )


def build(factory: Callable, spec: RewardSpec, target: str) -> Callable:
    """`factory: true`: the reward is what the factory returns when called with the recipe's kwargs."""
    try:
        inspect.signature(factory).bind(**spec.kwargs)
    except TypeError as e:
        params = Signature.of(factory).params
        unknown = [k for k in spec.kwargs if k not in params]
        hint = _did_you_mean(unknown[0], params) if unknown and not Signature.of(factory).var_kw else ""
        raise RecipeError(
            f"reward '{spec.name}' ({target}, a factory): its kwargs {sorted(spec.kwargs)} do not fit "
            f"{target}{inspect.signature(factory)}: {e}.{hint}"
        ) from None
    except ValueError:  # no readable signature: try it
        pass
    fn = factory(**spec.kwargs)
    if not callable(fn):
        raise RecipeError(
            f"reward '{spec.name}': factory: true, but {target}(...) returned a {type(fn).__name__}, not a function."
        )
    return fn


class Batch:
    """One call's arguments, built once from a candidates frame and shared by every reward."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.columns = {c: df[c].tolist() for c in df.columns if c not in HIDDEN}
        self.columns["group_ids"] = df["prompt_id"].tolist() if "prompt_id" in df.columns else list(range(len(df)))
        self.chat = MESSAGES in df.columns

    def __len__(self) -> int:
        return len(self.df)

    @cached_property
    def prompts(self) -> list:
        if not self.chat:
            return self.df["prompt"].tolist()
        parsed: dict[str, list] = {}  # a prompt's n candidates share one message list
        return [parsed.setdefault(m, json.loads(m)) for m in self.df[MESSAGES]]

    @cached_property
    def texts(self) -> list[str]:
        return self.df["completion"].tolist()

    @cached_property
    def completions(self) -> list:
        return [[{"role": "assistant", "content": c}] for c in self.texts] if self.chat else self.texts

    @cached_property
    def completion_ids(self) -> list[list[int]] | None:
        if "token_ids" not in self.df.columns:
            return None
        return [[int(t) for t in ids] for ids in self.df["token_ids"]]

    def offered(self, sig: Signature) -> dict:
        """Every per-sample argument: prompts, completions, completion_ids (built only if the function can take
        them), the prompt-set columns and group_ids. `arguments` keeps what a given function takes."""
        out = {"prompts": self.prompts, "completions": self.completions}
        if (sig.open or "completion_ids" in sig.params) and self.completion_ids is not None:
            out["completion_ids"] = self.completion_ids
        return out | self.columns


def arguments(sig: Signature, available: dict) -> dict:
    """What one function is given out of everything available (per-sample lists, recipe kwargs, hooks)."""

    def takes(key: str) -> bool:
        if key in HOOKS or key in sig.params:
            return key in sig.params
        if sig.open:
            return True
        return sig.var_kw == COLUMNS_ONLY and key not in ("prompts", "completions", "completion_ids")

    return {k: v for k, v in available.items() if takes(k)}


def check_call(sig: Signature, args: dict, kwargs: dict, offered: dict, name: str) -> None:
    """Before the call: no kwarg shadows a column, and every required parameter has a value."""
    clash = sorted(set(kwargs) & set(offered))
    if clash:
        raise RecipeError(f"reward '{name}': kwargs {clash} have the same names as prompt-set columns; rename them.")
    missing = [p for p in sig.required if p not in args and p not in HOOKS]
    if missing:
        have = sorted(k for k in offered if k not in SET_BY_US)
        raise RecipeError(
            f"reward '{name}' needs {', '.join(repr(m) for m in missing)}, which is neither a prompt-set column "
            f"(have: {', '.join(have) or 'none'}) nor in its recipe kwargs; add the column (data.*) or the kwarg."
        )


def one_sample(args: dict, per_sample: set[str], i: int) -> dict:
    """The arguments of one call restricted to sample i: the per-sample lists are cut, kwargs and hooks go whole."""
    return {k: (v[i : i + 1] if k in per_sample else v) for k, v in args.items()}
