"""The run directory and its state.json: which phase of which round is complete.

    runs/NAME/
      config.yaml   state.json   metrics.jsonl   data/*.parquet
      round_00/     (starting model: seed SFT or the base model, and its eval)
      round_01/ candidates.parquet scored.parquet decided.parquet accepted.parquet model/ eval.json

Each phase writes its own file (generate: candidates, reward: scored, accept: decided = scored
plus accept_prob/accepted, select: accepted = the SFT set, train: model/, eval: eval.json) and
never rewrites an earlier phase's. Which checkpoint round r uses is decided here (`RunState.model_of`).

Every file is written atomically (temporary file in the same directory, flush,
fsync, rename), so a crash leaves either the old file or the new one, never half.
A phase counts as done only once state.json says so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import pandas as pd

PHASES = ("generate", "reward", "accept", "select", "train", "eval")
log = logging.getLogger("rsft_gen")


class MissingCheckpointError(ValueError):
    """A round has no checkpoint (never trained, or its model/ was deleted)."""


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; rename it over `path` only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def publish_dir(tmp_dir: Path, final: Path) -> None:
    """Move a fully written directory (e.g. a checkpoint) into place in one rename."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp_dir, final)


LEFTOVER_DIRS = (".model.", ".base_model.")  # mkdtemp prefixes of checkpoints written before publish_dir


def remove_leftovers(run_dir: Path) -> int:
    """Delete what writers killed mid-write left behind: atomic_path's `.NAME.*.tmp` files and
    unpublished checkpoint directories. A kill (SIGKILL, OOM) skips every `finally`, so nobody
    else cleans them. Call only while holding the run lock: a live writer's files look the same."""
    removed = 0
    for tmp in run_dir.rglob(".*.tmp"):
        if tmp.is_file() and "wandb" not in tmp.relative_to(run_dir).parts:
            tmp.unlink(missing_ok=True)
            removed += 1
    for parent in [run_dir, *run_dir.glob("round_*")]:
        for d in parent.iterdir() if parent.is_dir() else ():
            if d.is_dir() and d.name.startswith(LEFTOVER_DIRS):
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
    return removed


class RunState:
    """state.json: {"completed": {"1": ["generate", ...]}, "finished": bool, ...}."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.path = run_dir / "state.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"completed": {}, "finished": False}
        for r, phases in self.data["completed"].items():
            # Written before select was a phase of its own: that accept phase also selected (no decided.parquet).
            if (
                "accept" in phases
                and "select" not in phases
                and not (round_dir(run_dir, int(r)) / "decided.parquet").exists()
            ):
                phases.insert(phases.index("accept") + 1, "select")

    def done(self, round_idx: int, phase: str) -> bool:
        return phase in self.data["completed"].get(str(round_idx), [])

    def mark(self, round_idx: int, phase: str) -> None:
        self.data["completed"].setdefault(str(round_idx), [])
        if phase not in self.data["completed"][str(round_idx)]:
            self.data["completed"][str(round_idx)].append(phase)
        write_json(self.path, self.data)

    def complete(self, round_idx: int, phase: str, metrics: dict) -> None:
        """Record a finished phase and its metrics in one atomic write."""
        self.data.setdefault("metrics", {}).setdefault(str(round_idx), {}).update(metrics)
        self.mark(round_idx, phase)

    def round_metrics(self, round_idx: int) -> dict:
        return dict(self.data.get("metrics", {}).get(str(round_idx), {}))

    def round_record(self, round_idx: int) -> dict:
        """The round's metrics.jsonl line: its phases' metrics plus the round's total time."""
        record = {"round": round_idx, **self.round_metrics(round_idx)}
        record["time/round_s"] = sum(v for k, v in record.items() if k.startswith("time/") and k != "time/round_s")
        return record

    def logged_rounds(self) -> set[int]:
        return set(self.data.get("logged_rounds", []))

    def mark_logged(self, round_idx: int) -> None:
        self.set("logged_rounds", sorted(self.logged_rounds() | {round_idx}))

    def set(self, key: str, value) -> None:
        self.data[key] = value
        write_json(self.path, self.data)

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    # --- checkpoints: which model each round uses, decided here only ---------------------------------------

    def carried(self) -> dict[int, str]:
        """Rounds that accepted nothing under accept.on_empty=carry -> the model they kept."""
        return {int(k): v for k, v in self.get("carried_models", {}).items()}

    def carry(self, r: int, model: str) -> None:
        """Round r accepted nothing: it keeps `model` (the previous round's) as its own."""
        self.set("carried_models", {**self.get("carried_models", {}), str(r): model})

    def trained_rounds(self) -> list[int]:
        """Rounds with a checkpoint of their own (round_NN/model) or a carried one."""
        own = {int(p.parent.name[len("round_") :]) for p in self.run_dir.glob("round_*/model") if p.is_dir()}
        return sorted(own | set(self.carried()))

    def model_of(self, r: int, base_model: str | Callable[[], str]) -> str:
        """The checkpoint round r produced: a carried model, else round_NN/model; round 0 without
        one (no seed SFT) is the starting model, `base_model` (a callable: built only if needed).
        Raises MissingCheckpointError for a later round without a model."""
        if r in (carried := self.carried()):
            return carried[r]
        model = round_dir(self.run_dir, r) / "model"
        if model.exists():
            return str(model)
        if r == 0:
            return base_model() if callable(base_model) else base_model
        have = ", ".join(str(i) for i in sorted(set(self.trained_rounds()) | {0}))
        raise MissingCheckpointError(
            f"{model} does not exist: round {r} of {self.run_dir} has no trained model; rounds with one: {have}."
        )

    def forget_missing_checkpoints(self) -> None:
        """A round marked trained whose model/ is gone (deleted after a corrupt-checkpoint error) is redone
        from its train phase."""
        carried = self.carried()
        for r in sorted(int(k) for k in self.data["completed"]):
            model = round_dir(self.run_dir, r) / "model"
            if self.done(r, "train") and r not in carried and not model.exists():
                log.warning(
                    "round %d is marked trained but %s is missing: redoing round %d from its train phase", r, model, r
                )
                done = self.data["completed"]
                kept = [p for p in done[str(r)] if p not in ("train", "eval")]
                self.data["completed"] = {k: v for k, v in done.items() if int(k) < r} | {str(r): kept}
                self.data["logged_rounds"] = [i for i in self.logged_rounds() if i < r]
                self.set("finished", False)
                return


def round_dir(run_dir: Path, round_idx: int) -> Path:
    return run_dir / f"round_{round_idx:02d}"
