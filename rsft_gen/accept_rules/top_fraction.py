"""`accept.rule: top_fraction`: the top accept.fraction of each prompt's candidates
(`scope: prompt`, RAFT's "local" ranking) or of the whole round (`scope: global`).

    accept: {rule: top_fraction, fraction: 0.25, scope: prompt}
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rsft_gen.accept_rules.base import Decision, Rule, prompt_groups, top_k_per_group


def fraction_k(fraction: float, size: np.ndarray) -> np.ndarray:
    # ceil, minus a hair so that 0.28 * 25 = 7.000000000000001 keeps 7, not 8
    return np.maximum(np.ceil(fraction * size - 1e-9), 1).astype(int)


def apply(df, cfg, rng, ctx) -> Decision:
    groups = np.zeros(len(df), dtype=int) if cfg.scope == "global" else prompt_groups(df)
    size = pd.Series(groups).groupby(groups).transform("size").to_numpy()
    prob, accepted = top_k_per_group(df["reward"].to_numpy(dtype=float), groups, fraction_k(cfg.fraction, size), rng)
    return Decision(prob, accepted)


RULE = Rule(
    name="top_fraction",
    apply=apply,
    keys=("fraction", "scope"),
    choices={"scope": ("prompt", "global")},
    help="accept the top accept.fraction of each prompt (scope: prompt) or of the round (scope: global) (RAFT)",
)
