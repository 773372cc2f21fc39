"""The acceptance rules, by name: `accept.rule` in a recipe picks one of RULES.

    from rsft_gen.accept_rules import RULES, get_rule
    get_rule("likelihood_ratio").needs_log_q(recipe.accept)   # -> True

Each rule is one small module declaring a `Rule` (see base.py): its name, the
`accept.*` keys it reads and their allowed values, whether it needs log q or
the generation engine's memory, its own recipe checks, and `apply`. config.py
(choices, records_log_q, validate) and loop.py (freeing the engine) read these
declarations; nothing else tests rule names. To add a rule, write
`accept_rules/my_rule.py` with `RULE = Rule(name="my_rule", apply=..., help=...)`
and add it to the import and the tuple below.
"""

from __future__ import annotations

from rsft_gen.accept_rules import accept_all, best_of_n, likelihood_ratio, threshold, top_fraction
from rsft_gen.accept_rules.base import AcceptContext, Decision, Rule

RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        threshold.RULE,
        best_of_n.RULE,
        top_fraction.RULE,
        accept_all.RULE,
        likelihood_ratio.RULE,
    )
}


def get_rule(name: str) -> Rule:
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"recipe key 'accept.rule' is '{name}'; choose one of {', '.join(RULES)}.") from None


__all__ = ["RULES", "AcceptContext", "Decision", "Rule", "get_rule"]
