"""Tracking: metrics.jsonl on disk (always) and Weights & Biases (unless disabled).

    tracker = make_tracker(recipe, run_dir, state)
    tracker.log_samples(1, decided)          # table of samples + accepted set artifact
    tracker.log_round(1, {"eval/accuracy": 0.9, ...})
    tracker.close()

metrics.jsonl is rebuilt from state.json on every write, so a crash between
writing a round's line and recording it can never leave a duplicate line.
Likewise each round's samples table and accepted-set artifact are marked in
state.json (`wandb_logged`) once logged: a crash after logging them and before
the accept phase is marked done redoes the phase, but does not log them twice.

W&B: one run per loop. `tracking.wandb.mode` picks online, offline or disabled;
left unset, WANDB_MODE decides if set, else online when an API key is
configured and offline (files under RUN_DIR/wandb, upload later with
`wandb sync RUN_DIR/wandb/offline-run-*`) when not. WANDB_PROJECT,
WANDB_ENTITY and WANDB_DIR override the recipe. The run id lives in state.json,
so a resumed loop continues the same W&B run.

Round metrics are logged against a `round` step metric. TRL's trainer logs its
per-step `train/*` series (train/loss, ...) against `train/global_step`, which
restarts every round, into the same run; our round-level `train/*` metrics go
to W&B as `sft/*` so the two never share a name.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import secrets
import string
import sys
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from rsft_gen.config import Recipe, RecipeError, WandbConfig, to_dict
from rsft_gen.state import RunState, round_dir, write_text

log = logging.getLogger("rsft_gen")
MODES = ("online", "offline", "disabled")
# Columns of the per-round samples table (when present), around every reward/<name> column.
TABLE_HEAD = ["prompt_id", "prompt", "completion", "answer"]
TABLE_TAIL = ["reward", "log_q", "log_p", "accept_prob", "accepted"]


class Tracker:
    """Writes metrics.jsonl; with a W&B run, also logs rounds, samples and accepted sets there."""

    def __init__(self, run_dir: Path, state: RunState, wandb_run=None, table_rows: int = 200):
        self.run_dir, self.state = run_dir, state
        self.run, self.table_rows = wandb_run, table_rows
        self.report_to: list[str] = ["wandb"] if wandb_run is not None else []  # for TRL's trainer
        self._defined: set[str] = set()

    def log_round(self, r: int, record: dict) -> None:
        rounds = sorted(self.state.logged_rounds() | {r})
        lines = [json.dumps(self.state.round_record(i), sort_keys=True) for i in rounds]
        write_text(self.run_dir / "metrics.jsonl", "\n".join(lines) + "\n")
        if self.run is not None:
            self._log({wandb_key(k): v for k, v in record.items() if k != "round"}, r)

    def log_samples(self, r: int, decided: pd.DataFrame) -> None:
        if self.run is None:
            return
        import wandb

        if self.table_rows > 0 and not self._logged("samples", r):
            self._log({"samples": wandb.Table(dataframe=samples_table(decided, self.table_rows))}, r)
            self._mark_logged("samples", r)
        accepted = round_dir(self.run_dir, r) / "accepted.parquet"
        if accepted.exists() and not self._logged("accepted", r):
            art = wandb.Artifact(
                f"accepted-{self.run.id}", type="dataset", metadata={"round": r, "rows": len(pd.read_parquet(accepted))}
            )
            art.add_file(str(accepted), name=f"round_{r:02d}/accepted.parquet")
            self.run.log_artifact(art, aliases=[f"round_{r:02d}"])
            self._mark_logged("accepted", r)

    def _logged(self, what: str, r: int) -> bool:
        return r in self.state.get("wandb_logged", {}).get(what, [])

    def _mark_logged(self, what: str, r: int) -> None:
        done = dict(self.state.get("wandb_logged", {}))
        done[what] = sorted(set(done.get(what, [])) | {r})
        self.state.set("wandb_logged", done)

    def close(self) -> None:
        if self.run is not None:
            failed = sys.exc_info()[0] is not None  # close() runs in the loop's `finally`
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None

    def _log(self, values: dict, r: int) -> None:
        # Exact per-key definitions: they win over the "*" glob TRL defines on train/global_step.
        for key in values.keys() - self._defined:
            self.run.define_metric(key, step_metric="round")
            self._defined.add(key)
        self.run.log({"round": r, **values})


def wandb_key(key: str) -> str:
    """Round-level train/* metrics become sft/* in W&B (TRL's per-step series own train/*)."""
    return "sft/" + key[len("train/") :] if key.startswith("train/") else key


def samples_table(decided: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The first `rows` samples (whole prompt groups first), with the columns worth reading."""
    reward_cols = sorted(c for c in decided.columns if c.startswith("reward/"))
    cols = (
        [c for c in TABLE_HEAD if c in decided.columns] + reward_cols + [c for c in TABLE_TAIL if c in decided.columns]
    )
    order = [c for c in ("prompt_id", "sample_index") if c in decided.columns]
    df = decided.sort_values(order, kind="stable") if order else decided
    df = df[cols].head(rows).reset_index(drop=True)
    # W&B tables want plain JSON values: NaN -> None, numpy bools -> bool
    return df.astype(object).where(df.notna(), None)


def api_key_configured() -> bool:
    """A W&B API key in the environment, an identity token file, or ~/.netrc for the W&B host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def resolve_mode(cfg: WandbConfig) -> str:
    """online | offline | disabled: the recipe's choice, else WANDB_MODE, else by API key."""
    if cfg.mode is not None:
        if cfg.mode not in MODES:
            raise RecipeError(
                f"recipe key 'tracking.wandb.mode' is '{cfg.mode}'; "
                f"choose one of {', '.join(MODES)}, or leave it unset."
            )
        return cfg.mode
    if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
        return "disabled"
    env = os.environ.get("WANDB_MODE", "").lower()
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if api_key_configured() else "offline"


def start_wandb(recipe: Recipe, run_dir: Path, state: RunState, mode: str):
    """Start (or resume) the loop's W&B run; its id is kept in state.json."""
    import wandb

    cfg = recipe.tracking.wandb
    run_id = state.get("wandb_run_id")
    if run_id is None:
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's id alphabet
        state.set("wandb_run_id", run_id)  # before init: a crash right after must not lose it
    wandb_dir = None if os.environ.get("WANDB_DIR") else str(run_dir)
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT") or cfg.project,
        entity=os.environ.get("WANDB_ENTITY") or cfg.entity,
        name=recipe.name,
        id=run_id,
        resume="allow",
        dir=wandb_dir,
        mode=mode,
        job_type="rsft",
    )
    # The resolved recipe is the run config. Locked, because TRL's trainer writes its
    # TrainingArguments into the same config and `seed` / `output_dir` would clash.
    run.config.update_locked(to_dict(recipe), user="rsft-gen")
    run.define_metric("round")
    if mode == "offline":
        log.info("W&B offline run %s in %s; upload later with: wandb sync %s", run_id, run.dir, Path(run.dir).parent)
    return run


def make_tracker(recipe: Recipe, run_dir: Path, state: RunState) -> Tracker:
    mode = resolve_mode(recipe.tracking.wandb)
    run = None if mode == "disabled" else start_wandb(recipe, run_dir, state, mode)
    return Tracker(run_dir, state, run, table_rows=recipe.tracking.wandb.table_rows)
