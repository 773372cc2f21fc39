"""One writer per run directory, and run-setup failures as one line.

A second `rsft-gen run` on a directory that a live process holds is refused with
the holder's pid; a lock left by a killed run is taken over (it is stale); a
child forked by the holder does not keep the lock once the holder is gone; an
OSError while setting up the run is a one-line `rsft-gen: error`.

    python -m pytest -q tests/test_run_lock.py
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rsft_gen import run_lock
from rsft_gen.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "rounds=1",
    "data.train_prompts=8",
    "data.eval_prompts=4",
    "generate.n=2",
    "accept.rule=all",
    "tracking.wandb.mode=disabled",
]
HOLD = """
import os, sys, time
from pathlib import Path
from rsft_gen import run_lock
run_lock.acquire(Path(sys.argv[1]))
if sys.argv[2] == "fork" and os.fork() == 0:  # a child (like a data-loader worker) that outlives its parent
    time.sleep(60)
    os._exit(0)
print("locked", flush=True)
time.sleep(60)
"""


def holder(run_dir: Path, mode: str = "plain") -> subprocess.Popen:
    """Another process holding run_dir's lock; returns once it has it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def run_cli(capsys, out: Path, *overrides: str) -> tuple[int, str]:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        rc = main(["run", "recipes/addition_tiny.yaml", *TINY, f"output_dir={out}", *overrides])
    finally:
        os.chdir(cwd)
    return rc, capsys.readouterr().err


def test_a_second_run_on_a_held_directory_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    proc = holder(out)
    try:
        rc, err = run_cli(capsys, out)
    finally:
        proc.kill()
        proc.wait()
    assert rc == 2 and "Traceback" not in err
    assert f"output directory '{out}' is in use by another rsft-gen run (pid {proc.pid} on host " in err
    assert "wait for that run to finish or stop it, or set another output_dir" in err
    assert sorted(p.name for p in out.iterdir()) == [run_lock.LOCK_NAME]  # it wrote nothing


def test_a_lock_left_by_a_killed_run_is_stale_and_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    proc = holder(out)
    proc.send_signal(signal.SIGKILL)  # no cleanup: the lock file stays, naming a dead pid
    proc.wait()
    assert json.loads((out / run_lock.LOCK_NAME).read_text())["pid"] == proc.pid
    with caplog.at_level(logging.WARNING, logger="rsft_gen"):
        run_lock.acquire(out)
    try:
        assert f"taking over a stale run lock (pid {proc.pid} on host" in caplog.text
        assert json.loads((out / run_lock.LOCK_NAME).read_text())["pid"] == os.getpid()
        run_lock.acquire(out)  # re-entrant within one process
    finally:
        run_lock.release(out)
    assert not (out / run_lock.LOCK_NAME).exists()


def test_a_child_forked_by_the_holder_does_not_keep_the_lock(tmp_path):
    out = tmp_path / "run"
    proc = holder(out, "fork")
    try:
        with pytest.raises(Exception, match="in use by another rsft-gen run"):
            run_lock.acquire(out)
        proc.send_signal(signal.SIGKILL)  # the parent dies; its forked child sleeps on
        proc.wait()
        run_lock.acquire(out)
        run_lock.release(out)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the child too (same session)


def test_a_finished_or_refused_run_leaves_no_lock(tmp_path, capsys):
    out = tmp_path / "run"
    rc, err = run_cli(capsys, out, "rounds=0", "seed_sft.n=0", "eval.batch_size=4")
    assert rc == 0, err
    assert not (out / run_lock.LOCK_NAME).exists()
    rc, err = run_cli(capsys, out, "rounds=0", "seed_sft.n=0", "eval.batch_size=4")  # already complete: nothing to do
    assert rc == 0 and not (out / run_lock.LOCK_NAME).exists()
    rc, err = run_cli(capsys, out, "rounds=0", "seed_sft.n=0", "generate.temperature=0.5")  # refused: another recipe
    assert rc == 2 and "--allow-recipe-change" in err and not (out / run_lock.LOCK_NAME).exists()


def test_an_os_error_during_setup_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "data").write_text("not a directory")  # the prompt sets cannot be written under it
    rc, err = run_cli(capsys, out)
    lines = [x for x in err.splitlines() if x.startswith("rsft-gen: error:")]
    assert rc == 2 and "Traceback" not in err and len(lines) == 1
    assert f"setting up run directory '{out}' failed: File exists ({out / 'data'})" in lines[0]
    assert "run the same command again" in lines[0]
    assert not (out / run_lock.LOCK_NAME).exists()


def test_any_other_os_error_reaching_the_cli_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").mkdir()  # exists, but reading it fails with IsADirectoryError
    rc = main(["report", str(run_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().startswith("rsft-gen: error: Is a directory: ") and "(IsADirectoryError)" in err


def test_the_lock_holder_removes_what_a_killed_writer_left(tmp_path, capsys):
    out = tmp_path / "run"
    leftovers = [
        out / ".state.json.k1l2.tmp",
        out / "round_01" / ".scored.parquet.x9.tmp",
        out / "round_01" / ".model.ab12" / "w.bin",
    ]
    for f in leftovers:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("half")
    kept = out / "wandb" / ".x.tmp"  # not ours
    kept.parent.mkdir()
    kept.write_text("w&b")
    rc, err = run_cli(capsys, out, "rounds=0", "seed_sft.n=0", "eval.batch_size=4")
    assert rc == 0, err
    assert not any(f.exists() for f in leftovers) and not (out / "round_01" / ".model.ab12").exists()
    assert kept.exists()
