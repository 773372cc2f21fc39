"""generate.executor: ray and rewards[].executor: ray on a local Ray cluster (2 CPUs, no GPU, no network).

    .venv/bin/python -m pytest -q tests/test_ray.py

One cluster serves the whole module (starting one takes seconds); the loop and the
pool attach to it, as they would to `ray start --head`, and leave it running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from rsft_gen.config import RewardSpec, load_recipe  # noqa: E402
from rsft_gen.executor_ray import RayShardPool, chunk_bounds, remote_reward  # noqa: E402
from rsft_gen.generate_hf import HFGenerator  # noqa: E402
from rsft_gen.loop import run  # noqa: E402
from rsft_gen.rewards import load, score  # noqa: E402
from rsft_gen.shards import plan_shards, read_shards, run_local  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=80 * 1024**2, log_to_driver=False)
    yield
    ray.shutdown()


ROOT = Path(__file__).resolve().parents[1]
# Round 1 of a tiny run: 64 prompts x 4 candidates in 4 shards, one short SFT step.
SMALL = [
    "rounds=1",
    "data.train_prompts=64",
    "data.eval_prompts=16",
    "seed_sft.n=0",
    "generate.n=4",
    "generate.shard_prompts=16",
    "accept.rule=all",
    "train.epochs=1",
    "train.batch_size=256",
    "eval.n=1",
    "eval.k=[1]",
    "tracking.wandb.mode=disabled",
]


def small_run(out: Path, *overrides: str):
    run(load_recipe(ROOT / "recipes" / "addition_tiny.yaml", [f"output_dir={out}", *SMALL, *overrides]))
    return pd.read_parquet(out / "round_01" / "candidates.parquet")


def test_candidates_identical_local_and_ray_with_1_and_2_workers(tmp_path):
    local = small_run(tmp_path / "local")
    one = small_run(tmp_path / "ray1", "generate.executor=ray", "generate.workers=1")
    two = small_run(tmp_path / "ray2", "generate.executor=ray", "generate.workers=2")
    assert len(local) == 64 * 4
    pd.testing.assert_frame_equal(local, one)
    pd.testing.assert_frame_equal(local, two)
    assert not (tmp_path / "ray2" / "round_01" / "candidates").exists()  # shards folded into candidates.parquet


@pytest.mark.slow
def test_head_killed_mid_generation_resumes_from_disk(tmp_path):
    """The head (a `rsft-gen run` attached to this cluster) SIGKILLs itself once shard 1 is written."""
    out, address = tmp_path / "ray", ray.get_runtime_context().gcs_address
    env = {**os.environ, "RSFT_FAULT": "round=1,phase=generate,shard=1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "rsft_gen.cli",
        "run",
        "recipes/addition_tiny.yaml",
        *SMALL,
        f"output_dir={out}",
        "generate.executor=ray",
        f"generate.ray_address={address}",
    ]
    killed = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    shards = out / "round_01" / "candidates"
    written = {p.name for p in shards.glob("shard_*.parquet")}  # 1, and whatever the other worker finished before
    assert "shard_00001.parquet" in written
    assert not (out / "round_01" / "candidates.parquet").exists()
    kept = {p: p.stat().st_mtime_ns for p in shards.glob("shard_*.parquet")}
    resumed = small_run(out, "generate.executor=ray", f"generate.ray_address={address}")
    pd.testing.assert_frame_equal(resumed, small_run(tmp_path / "local"))
    assert kept and all(not p.exists() for p in kept)  # folded into candidates.parquet once the phase completed


@pytest.fixture(scope="module")
def shard_setup(tmp_path_factory, tiny_model_dir):
    """Six shards slow enough (a few tenths of a second each) to kill a worker in the middle of one."""
    recipe = load_recipe(
        None,
        [
            "generate.n=8",
            "generate.max_new_tokens=32",
            "generate.shard_prompts=16",
            "generate.executor=ray",
            "generate.workers=2",
        ],
    )
    prompts = pd.DataFrame(
        {
            "prompt_id": range(96),
            "prompt": [f"{i % 97}+{i % 13}=" for i in range(96)],
            "answer": [str(i % 97 + i % 13) for i in range(96)],
        }
    )
    reference = plan_shards(recipe, 1, prompts, tmp_path_factory.mktemp("reference"))
    run_local(reference, lambda: HFGenerator(tiny_model_dir))
    return recipe, prompts, read_shards(reference, prompts)


@pytest.fixture(scope="module")
def pool(shard_setup):
    """Two workers, shared by the fault tests below (each worker takes seconds to start)."""
    pool = RayShardPool(shard_setup[0])
    yield pool
    pool.close()


def test_every_worker_gets_a_shard_and_its_own_core(tmp_path, tiny_model_dir, shard_setup, pool):
    """Two shards, two workers: one each (not both queued on the first), each actor bound to its own core."""
    recipe, prompts, expected = shard_setup
    jobs = plan_shards(recipe, 1, prompts, tmp_path / "candidates")[:2]
    stats = pool.run(jobs, tiny_model_dir)
    assert stats.by_worker == {0: 1, 1: 1}
    pd.testing.assert_frame_equal(read_shards(jobs, prompts), expected.iloc[: 2 * 16 * 8])
    if len(os.sched_getaffinity(0)) >= 2:
        cores = [os.sched_getaffinity(pid) for pid in pool.pids().values()]
        assert all(len(c) == 1 for c in cores) and cores[0] != cores[1], cores


def test_killed_worker_loses_only_its_shard(tmp_path, tiny_model_dir, shard_setup, pool):
    recipe, prompts, expected = shard_setup
    jobs = plan_shards(recipe, 1, prompts, tmp_path / "candidates")
    pids = pool.pids()
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("stats", pool.run(jobs, tiny_model_dir)))
    worker.start()
    deadline = time.time() + 120
    while not any(job.path.exists() for job in jobs) and time.time() < deadline:
        time.sleep(0.01)
    written = {job.path: job.path.stat().st_mtime_ns for job in jobs if job.path.exists()}
    os.kill(pids[0], signal.SIGKILL)  # the actor process, in the middle of its next shard
    worker.join(timeout=300)
    stats = result["stats"]
    assert 0 < len(written) < len(jobs)
    assert stats.lost >= 1  # the shard it was sampling (and any queued behind it) went to the other worker
    assert stats.on_head == 0
    assert {p: p.stat().st_mtime_ns for p in written} == written  # finished shards were not redone
    pd.testing.assert_frame_equal(read_shards(jobs, prompts), expected)
    assert list(pool.pids()) == [1]
    pool.top_up()  # the next round replaces the dead worker
    assert sorted(pool.pids()) == [0, 1] and pool.pids()[0] != pids[0]


def test_no_worker_left_the_head_runs_the_shards(tmp_path, tiny_model_dir, shard_setup, pool):
    recipe, prompts, expected = shard_setup
    jobs = plan_shards(recipe, 1, prompts, tmp_path / "candidates")[:2]
    for pid in pool.pids().values():  # both workers gone (their nodes lost, say) before the round starts
        os.kill(pid, signal.SIGKILL)
    stats = pool.run(jobs, tiny_model_dir)
    assert stats.on_head == len(jobs) and stats.lost >= 2
    pd.testing.assert_frame_equal(read_shards(jobs, prompts), expected.iloc[: 2 * 16 * 8])


def test_chunks_never_split_a_prompt_group():
    groups = [0] * 4 + [1] * 4 + [2] * 3 + [3]
    bounds = chunk_bounds(len(groups), 3, groups)
    assert bounds == [(0, 4), (4, 8), (8, 11), (11, 12)]
    assert chunk_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]


def test_rewards_over_ray_match_local_in_order():
    programs = ["def f(x):\n    return x + 1", "def f(x):\n    return x", "def f(x): return 1/0"] * 8
    programs[5] = "while True: pass"  # one timeout: a slow chunk must not reorder the values
    cands = pd.DataFrame(
        {
            "prompt_id": [i // 4 for i in range(24)],
            "sample_index": [i % 4 for i in range(24)],
            "prompt": ["f"] * 24,
            "completion": [p + f"\n# {i}" for i, p in enumerate(programs)],
            "tests": [["assert f(1) == 2", "assert f(0) == 1", "assert f(1) > 0"]] * 24,
        }
    )
    specs = [RewardSpec(name="code_exec", kwargs={"timeout_s": 1.0}), RewardSpec(name="length", weight=0.1)]
    local, local_counts = score(cands, specs)
    remote_specs = [RewardSpec(name="code_exec", kwargs={"timeout_s": 1.0}, executor="ray"), specs[1]]
    remote, remote_counts = score(cands, remote_specs)
    pd.testing.assert_frame_equal(local, remote)
    assert local_counts == remote_counts
    assert local["reward/code_exec"].tolist()[:6] == [1.0, pytest.approx(1 / 3), 0.0, 1.0, pytest.approx(1 / 3), 0.0]

    # majority_vote needs each prompt's candidates together: chunks of 3 are widened to whole groups.
    answers = [str(v) for v in [1, 1, 2, 3, 5, 5, 5, 6, 7, 8, 8, 8]]
    groups = [0] * 4 + [1] * 4 + [2] * 4
    fn = load("majority_vote")
    remote = remote_reward(fn, RewardSpec(name="majority_vote"), chunk_size=3)
    assert remote(prompts=["q"] * 12, completions=answers, group_ids=groups) == fn(
        ["q"] * 12, answers, group_ids=groups
    )


def test_remote_reward_errors_read_as_local():
    from rsft_gen.rewards import RewardError

    cands = pd.DataFrame({"prompt_id": [0, 1], "sample_index": [0, 0], "prompt": ["a", "b"], "completion": ["x", "y"]})
    with pytest.raises(RewardError, match="reward 'code_exec' raised KeyError: .*no column 'tests'"):
        score(cands, [RewardSpec(name="code_exec", executor="ray")])


def test_training_across_two_machines_matches_one_process(tiny_model_dir, tmp_path):
    """train.num_machines=2: `accelerate launch` as two Ray tasks (machine ranks 0 and 1; here both on the one node),
    joined by torch.distributed over the node's address: the steps and loss of one in-process trainer with the
    same global batch, and rank 0's checkpoint."""
    from transformers import AutoModelForCausalLM

    from rsft_gen.config import TrainConfig
    from rsft_gen.data import addition_problems
    from rsft_gen.train import train_sft
    from rsft_gen.train_launch import launch_train

    sft = addition_problems(64, [1, 2], seed=0).rename(columns={"answer": "completion"})
    one = train_sft(tiny_model_dir, sft, tmp_path / "one", TrainConfig(batch_size=16, logging_steps=1), "cpu", seed=0)
    cfg = TrainConfig(batch_size=8, logging_steps=1, num_processes=2, num_machines=2)
    two = launch_train(tiny_model_dir, sft, tmp_path / "two", cfg, "cpu", 0, [])
    assert two["train/machines"] == 2
    assert one["train/steps"] == two["train/steps"] == 4
    assert abs(one["train/loss"] - two["train/loss"]) < 1e-4, (one["train/loss"], two["train/loss"])
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "two") is not None
    with pytest.raises(RuntimeError, match=r"machine rank \d \(node .*\) failed"):
        launch_train(str(tmp_path / "no_model"), sft, tmp_path / "three", cfg, "cpu", 0, [])


def test_a_round_trains_on_two_machines_while_the_workers_hold_every_cpu(tmp_path, monkeypatch):
    """The generation actors keep their CPUs through training; the machines' tasks ask for none, so they still run.
    The output dir is relative: the machines' tasks start in another directory, as on other nodes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    small_run(
        Path("run"),
        "generate.executor=ray",
        "generate.workers=2",
        "train.num_processes=2",
        "train.num_machines=2",
        "train.batch_size=32",
    )
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("train/machines") == 2 for m in metrics), metrics
