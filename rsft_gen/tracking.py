"""Tracking: metrics.jsonl on disk (always) and Weights & Biases (when enabled).

    tracker = make_tracker(recipe, run_dir, state)
    tracker.log_round(1, {"eval/accuracy": 0.9, ...})
    tracker.close()

metrics.jsonl is rebuilt from state.json on every write, so a crash between
writing a round's line and recording it can never leave a duplicate line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rsft_gen.config import Recipe
from rsft_gen.state import RunState, write_text


class Tracker:
    report_to: list[str] = []  # what TRL's trainer should report to

    def __init__(self, run_dir: Path, state: RunState):
        self.run_dir, self.state = run_dir, state

    def log_round(self, r: int, record: dict) -> None:
        rounds = sorted(self.state.logged_rounds() | {r})
        lines = []
        for i in rounds:
            rec = {"round": i, **self.state.round_metrics(i)}
            rec["time/round_s"] = sum(v for k, v in rec.items() if k.startswith("time/") and k != "time/round_s")
            lines.append(json.dumps(rec, sort_keys=True))
        write_text(self.run_dir / "metrics.jsonl", "\n".join(lines) + "\n")

    def log_samples(self, r: int, decided: pd.DataFrame) -> None:
        pass

    def close(self) -> None:
        pass


def make_tracker(recipe: Recipe, run_dir: Path, state: RunState) -> Tracker:
    return Tracker(run_dir, state)
