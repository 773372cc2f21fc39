"""Crash safety: kill a run hard at every phase (RSFT_FAULT) and at a random moment,
resume it, and check the run directory is exactly what an uninterrupted run gives.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_resume.py

The killed runs are subprocesses (SIGKILL: no cleanup runs, like a pre-emption);
the resumes run in-process to save the interpreter start-up.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from rsft_gen.cli import main

ROOT = Path(__file__).resolve().parents[1]
# 48 prompts in shards of 16: three shards per round, so "mid-generation" has a shard on each side.
ARGS = [
    "recipes/addition_tiny.yaml",
    "rounds=2",
    "data.train_prompts=48",
    "data.eval_prompts=16",
    "seed_sft.n=32",
    "seed_sft.epochs=1",
    "generate.n=2",
    "generate.shard_prompts=16",
    "accept.rule=all",
    "tracking.wandb.mode=disabled",
]
# Every point where RSFT_FAULT can stop a run: each phase of round 0 and round 1, a shard in the
# middle of generation, and the first shard of round 2.
FAULTS = [
    "round=0,phase=train",
    "round=0,phase=eval",
    "round=1,phase=generate,shard=1",
    "round=1,phase=generate",
    "round=1,phase=reward",
    "round=1,phase=accept",
    "round=1,phase=select",
    "round=1,phase=train",
    "round=1,phase=eval",
    "round=2,phase=generate,shard=0",
]
NOT_COMPARED = ("time/", "train/seconds")  # wall-clock timings differ run to run; so does throughput (*per_s)


def cli_process(out: Path, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RSFT_FAULT": fault or ""}
    cmd = [sys.executable, "-m", "rsft_gen.cli", "run", *ARGS, f"output_dir={out}"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def resume(out: Path) -> None:
    os.environ.pop("RSFT_FAULT", None)
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert main(["run", *ARGS, f"output_dir={out}"]) == 0
    finally:
        os.chdir(cwd)


def metrics(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [
        {k: v for k, v in rec.items() if not k.startswith(NOT_COMPARED) and not k.endswith("per_s")} for rec in lines
    ]


def assert_same_run(run: Path, ref: Path) -> None:
    """Same files, same samples row for row, same weights, same metrics; no shard or temp file left."""
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(run) == files(ref)
    assert not [f for f in files(run) if f.endswith(".tmp") or "/candidates/" in f]
    for rel in files(ref):
        if rel.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(run / rel), pd.read_parquet(ref / rel), obj=rel)
        elif rel.endswith((".safetensors", "eval.json")):
            assert (run / rel).read_bytes() == (ref / rel).read_bytes(), rel
    assert metrics(run) == metrics(ref)
    state, ref_state = (json.loads((d / "state.json").read_text()) for d in (run, ref))
    assert state["completed"] == ref_state["completed"] and state["finished"] is True


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run, shared by every test here."""
    out = tmp_path_factory.mktemp("ref") / "run"
    resume(out)
    return out


@pytest.mark.parametrize("fault", FAULTS)
def test_kill_at_phase_then_resume_matches_uninterrupted(fault, reference, tmp_path):
    out = tmp_path / "run"
    proc = cli_process(out, fault)
    assert proc.wait(timeout=300) == -signal.SIGKILL, proc.stderr.read()
    want = dict(p.split("=") for p in fault.split(","))
    state = json.loads((out / "state.json").read_text()) if (out / "state.json").exists() else {"completed": {}}
    assert want["phase"] not in state["completed"].get(want["round"], [])  # killed before it was marked done
    if "shard" in want:  # the shards written before the kill are on disk, the rest not yet
        shards = sorted(p.name for p in (out / f"round_{int(want['round']):02d}" / "candidates").iterdir())
        assert shards == [f"shard_{i:05d}.parquet" for i in range(int(want["shard"]) + 1)]
    resume(out)
    assert_same_run(out, reference)


def test_kill_at_a_random_moment_then_resume_matches_uninterrupted(reference, tmp_path):
    out = tmp_path / "run"
    proc = cli_process(out)
    while not (out / "config.yaml").exists() and proc.poll() is None:  # the run has set up its directory
        time.sleep(0.05)
    time.sleep(random.Random(7).uniform(0.5, 3.0))  # setup and rounds take ~3-5 s on two busy cores
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    resume(out)
    assert_same_run(out, reference)


def test_same_seed_same_recipe_gives_identical_accepted_sets_and_metrics(reference, tmp_path):
    out = tmp_path / "run"
    proc = cli_process(out)  # a fresh, uninterrupted run in its own process
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    for r in (1, 2):
        rel = f"round_{r:02d}/accepted.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(out / rel), pd.read_parquet(reference / rel))
    assert metrics(out) == metrics(reference)


def test_resume_with_a_results_changing_recipe_is_refused_naming_the_keys(reference, capsys):
    before = (reference / "state.json").read_text(), (reference / "metrics.jsonl").read_text()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        rc = main(["run", *ARGS, f"output_dir={reference}", "generate.temperature=0.7", "accept.rule=threshold"])
        err = capsys.readouterr().err
        assert rc == 2
        assert "accept.rule: 'all' -> 'threshold'" in err and "generate.temperature: 1.0 -> 0.7" in err
        assert "--allow-recipe-change" in err
        # Harmless differences (tracking) are allowed: the finished run just says so.
        assert main(["run", *ARGS, f"output_dir={reference}", "tracking.wandb.project=other"]) == 0
        assert "already complete" in capsys.readouterr().out
    finally:
        os.chdir(cwd)
    assert ((reference / "state.json").read_text(), (reference / "metrics.jsonl").read_text()) == before
