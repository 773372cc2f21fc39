"""`accept.rule: best_of_n`: the highest reward of each prompt; ties broken by a seeded draw.

accept: {rule: best_of_n}
"""

from __future__ import annotations

import numpy as np

from rsft_gen.accept_rules.base import Decision, Rule, prompt_groups, top_k_per_group


def apply(df, cfg, rng, ctx) -> Decision:
    prob, accepted = top_k_per_group(
        df["reward"].to_numpy(dtype=float), prompt_groups(df), np.ones(len(df), dtype=int), rng
    )
    return Decision(prob, accepted)


RULE = Rule(name="best_of_n", apply=apply, help="accept each prompt's best candidate (ties: a seeded uniform draw)")
