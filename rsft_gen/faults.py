"""Fault injection for the crash tests: stop the run hard at a chosen point.

    RSFT_FAULT="round=2,phase=train" rsft-gen run recipes/addition_tiny.yaml
    RSFT_FAULT="round=1,phase=generate,shard=3" rsft-gen run ...

The process SIGKILLs itself (no cleanup, no finally blocks, like a pre-emption
or the OOM killer) when the loop reaches that point: for a phase, after its
outputs are written and before state.json marks it complete; with `shard`,
right after that generation shard is written. Unset, `check` costs one lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "RSFT_FAULT"


def check(round_idx: int, phase: str, shard: int | None = None) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    try:
        want = dict(part.split("=", 1) for part in spec.replace(" ", "").split(","))
        target = (int(want["round"]), want["phase"], int(want["shard"]) if "shard" in want else None)
    except (KeyError, ValueError):
        raise ValueError(
            f"{ENV}='{spec}' is not like 'round=1,phase=train' or 'round=1,phase=generate,shard=3'."
        ) from None
    if target == (round_idx, phase, shard):
        os.kill(os.getpid(), signal.SIGKILL)
