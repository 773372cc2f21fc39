"""Every seed of a run, from one place.

    from rsft_gen.seeds import derive
    derive(recipe.seed, "accept", round=3)            # the accept phase of round 3
    derive(recipe.seed, "generate", round=3, shard=7)  # generation shard 7 of round 3

A seed is `numpy.random.SeedSequence([seed, round, stage, shard])` reduced to one
32-bit word, so two random choices that differ in any of the four never share a
stream: run seed=1's round 0 and run seed=0's round 1 train with unrelated seeds
(a formula like `seed + round` gives them the same one), and accept and select
of one round draw independently. 32 bits fit every consumer (torch, vLLM, numpy).

The stages (their numbers are part of the seed: never renumber one):

    generate   each generation shard (shards.shard_seed; rounds >= 1, shard = its index)
    accept     the acceptance rule's coin flips and pilot split (round r)
    select     drawing the seed data mixed into the SFT set (select.mix_seed_fraction)
    train      the SFT of round r (TRL's seed and data_seed)
    eval       eval sampling and pass@k/maj@k subsets; one seed for every round (round 0), so rounds are
               compared on the same random draws and `rsft-gen eval` reproduces the loop's eval.json
    seed_sft   the round-0 SFT on labelled data (seed_sft.n > 0)

Data sets and the tiny model are built from the recipe's seed directly (rsft_gen/data.py,
tiny_model.py): they are the run's fixed inputs, shared by all rounds.
"""

from __future__ import annotations

import numpy as np

STAGES = {"generate": 1, "accept": 2, "select": 3, "train": 4, "eval": 5, "seed_sft": 6}


def derive(seed: int, stage: str, round: int = 0, shard: int = 0) -> int:
    """The seed of one random choice of a run (see the module docstring for the stages)."""
    if stage not in STAGES:
        raise ValueError(f"unknown seed stage '{stage}'; one of {', '.join(STAGES)}")
    return int(np.random.SeedSequence([seed, round, STAGES[stage], shard]).generate_state(1, np.uint32)[0])
