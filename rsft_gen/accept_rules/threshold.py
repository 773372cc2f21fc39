"""`accept.rule: threshold`: accept every candidate whose reward is >= accept.threshold.

accept: {rule: threshold, threshold: 1.0}
"""

from __future__ import annotations

import numpy as np

from rsft_gen.accept_rules.base import Decision, Rule


def apply(df, cfg, rng, ctx) -> Decision:
    reward = df["reward"].to_numpy(dtype=float)
    finite = np.isfinite(reward)
    prob = (finite & (np.where(finite, reward, -np.inf) >= cfg.threshold)).astype(float)
    return Decision(prob, prob > 0)


RULE = Rule(
    name="threshold",
    apply=apply,
    keys=("threshold",),
    help="accept when reward >= accept.threshold (STaR, RFT, ReST-EM)",
)
