"""`accept.rule: all`: accept every candidate with a finite reward (the ablation baseline).

accept: {rule: all}
"""

from __future__ import annotations

import numpy as np

from rsft_gen.accept_rules.base import Decision, Rule


def apply(df, cfg, rng, ctx) -> Decision:
    finite = np.isfinite(df["reward"].to_numpy(dtype=float))
    return Decision(finite.astype(float), finite.copy())


RULE = Rule(
    name="all", apply=apply, help="accept every candidate (the ablation: train on your own samples, right or wrong)"
)
