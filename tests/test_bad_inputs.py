"""A catalogue of bad inputs: each must stop with a clear `rsft-gen: error: ...` (what,
where, what to do; exit 2, no traceback) and lose nothing already written.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_bad_inputs.py
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rsft_gen.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "rounds=1",
    "data.train_prompts=24",
    "data.eval_prompts=8",
    "seed_sft.n=16",
    "seed_sft.epochs=1",
    "generate.n=2",
    "accept.rule=all",
    "tracking.wandb.mode=disabled",
]


def bad_length(prompts, completions, **_):
    """A reward that forgets one completion."""
    return [1.0] * (len(completions) - 1)


def bad_type(prompts, completions, **_):
    """A reward that returns text."""
    return ["good"] * len(completions)


def run_cli(capsys, out: Path, *overrides: str, recipe: str = "recipes/addition_tiny.yaml") -> tuple[int, str]:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        rc = main(["run", recipe, *TINY, f"output_dir={out}", *overrides])
    finally:
        os.chdir(cwd)
    return rc, capsys.readouterr().err


def files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()} if d.exists() else {}


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# (id, overrides (a callable gets tmp_path), the fragments the error message must contain)
CASES = [
    (
        "misspelt key",
        ["generate.temprature=0.5"],
        ["unknown recipe key 'generate.temprature'", "Did you mean 'generate.temperature'?"],
    ),
    ("misspelt top-level key", ["round=2"], ["unknown recipe key 'round'", "Did you mean 'rounds'?"]),
    ("misspelt section", ["acept.rule=all"], ["unknown recipe key 'acept'", "Did you mean 'accept'?"]),
    ("unknown key", ["generate.beam_width=4"], ["unknown recipe key 'generate.beam_width'"]),
    ("wrong type int", ["rounds=two"], ["bad value for key 'rounds'", "two"]),
    ("wrong type k", ["generate.n=many"], ["bad value for key 'generate.n'", "many"]),
    ("wrong type float", ["accept.beta=high"], ["bad value for key 'accept.beta'", "high"]),
    ("override without =", ["rounds"], ["command-line override 'rounds' is not key=value"]),
    ("zero k", ["generate.n=0"], ["recipe key 'generate.n' is 0", "positive number of candidates per prompt"]),
    ("negative k", ["generate.n=-2"], ["recipe key 'generate.n' is -2", "positive"]),
    ("negative rounds", ["rounds=-1"], ["recipe key 'rounds' is -1", "0 or more"]),
    ("zero beta", ["accept.rule=likelihood_ratio", "accept.beta=0"], ["recipe key 'accept.beta' is 0", "must be > 0"]),
    ("negative beta", ["accept.beta=-0.5"], ["recipe key 'accept.beta' is -0.5", "must be > 0"]),
    (
        "invalid M",
        ["accept.log_m=huge"],
        ["recipe key 'accept.log_m' is 'huge'", "give a number (log of the bound M) or 'auto'"],
    ),
    ("invalid r_max", ["accept.r_max=top"], ["recipe key 'accept.r_max' is 'top'", "'per_prompt'"]),
    (
        "unknown rule",
        ["accept.rule=rejection"],
        ["recipe key 'accept.rule' is 'rejection'", "choose one of threshold, best_of_n"],
    ),
    (
        "unknown on_empty",
        ["accept.on_empty=skip"],
        ["recipe key 'accept.on_empty' is 'skip'", "choose one of stop, carry"],
    ),
    ("top_p above 1", ["generate.top_p=1.5"], ["recipe key 'generate.top_p' is 1.5", "(0, 1]"]),
    ("zero shard size", ["generate.shard_prompts=0"], ["recipe key 'generate.shard_prompts' is 0", "positive"]),
    ("k above eval.n", ["eval.n=2", "eval.k=[4]"], ["recipe key 'eval.k' is [4]", "each k must be in 1..eval.n (2)"]),
    ("empty prompt set", ["data.train_prompts=0"], ["recipe key 'data.train_prompts' is 0", "positive"]),
    ("no rewards", ["rewards=[]"], ["recipe key 'rewards' is empty", "exact_match"]),
    ("bad digits", ["data.digits=[0]"], ["recipe key 'data.digits' is [0]", "positive digit counts"]),
    (
        "reward not found",
        ["rewards=[{name: exact_macth}]"],
        ["reward 'exact_macth' not found; available:", "exact_match", "'package.module:function'"],
    ),
    (
        "reward module missing",
        ["rewards=[{name: 'no_such_pkg.mod:fn'}]"],
        ["reward 'no_such_pkg.mod:fn' could not be imported", "check the module is installed"],
    ),
    (
        "model path missing",
        ["model.path=/nonexistent/model"],
        ["recipe key 'model.path' is '/nonexistent/model', which does not exist", "'tiny'"],
    ),
    (
        "data file missing",
        lambda t: ["data.task=file", f"data.path={t}/nope.jsonl"],
        ["nope.jsonl", "does not exist", "data.path"],
    ),
    (
        "data file without prompt field",
        lambda t: ["data.task=file", "data.path=" + write(t / "q.jsonl", '{"question": "1+1=", "answer": "2"}\n' * 10)],
        ["q.jsonl", "no field 'prompt'", "data.prompt_field", "question"],
    ),
    (
        "data file without answer field",
        lambda t: ["data.task=file", "data.path=" + write(t / "a.jsonl", '{"prompt": "1+1=", "solution": "2"}\n' * 10)],
        ["a.jsonl", "no field 'answer'", "data.answer_field", "solution"],
    ),
    (
        "empty data file",
        lambda t: ["data.task=file", "data.path=" + write(t / "e.csv", "prompt,answer\n")],
        ["e.csv", "empty"],
    ),
    (
        "output dir under a file",
        lambda t: [f"output_dir={write(t / 'f', 'x')}/run"],
        ["output directory", "is not writable", "set output_dir"],
    ),
]


@pytest.mark.parametrize("overrides,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_recipe_gives_a_clear_error_and_writes_no_run(overrides, expected, tmp_path, capsys):
    out = tmp_path / "run"
    rc, err = run_cli(capsys, out, *(overrides(tmp_path) if callable(overrides) else overrides))
    assert rc == 2 and err.startswith("rsft-gen: error: "), err
    for fragment in expected:
        assert fragment in err, (fragment, err)
    assert "state.json" not in files(out) and not list(out.glob("round_*"))


def test_missing_recipe_file(tmp_path, capsys):
    rc, err = run_cli(capsys, tmp_path / "run", recipe="recipes/no_such.yaml")
    assert rc == 2 and "recipe file 'recipes/no_such.yaml' does not exist; pass a path to a YAML recipe" in err


@pytest.mark.parametrize(
    "fn,expected",
    [
        (
            "bad_length",
            "returned list of length 47 for 48 completions; "
            "it must return a list with one float or None per completion (set on_error: zero or skip",
        ),
        ("bad_type", "returned 'good' for"),
    ],
    ids=["reward wrong length", "reward wrong type"],
)
def test_bad_reward_output_stops_at_the_reward_phase_keeping_candidates(fn, expected, tmp_path, capsys):
    out = tmp_path / "run"
    # Second reward, so round 0's eval (which uses the first) passes and the reward phase fails.
    rc, err = run_cli(capsys, out, "seed_sft.n=0", f"rewards=[{{name: exact_match}}, {{name: 'test_bad_inputs:{fn}'}}]")
    assert rc == 2 and f"rsft-gen: error: reward 'test_bad_inputs:{fn}' {expected}" in err, err
    state = json.loads((out / "state.json").read_text())
    assert state["completed"]["1"] == ["generate"] and (out / "round_01/candidates.parquet").exists()


def test_zero_accepted_with_on_empty_stop(tmp_path, capsys):
    out = tmp_path / "run"
    rc, err = run_cli(capsys, out, "accept.rule=threshold", "accept.threshold=2.0", "accept.on_empty=stop")
    assert rc == 2
    assert (
        f"round 1 accepted no samples (see {out / 'round_01' / 'scored.parquet'}); stopping as accept.on_empty=stop"
        in err
    )
    assert "set accept.on_empty=carry" in err
    state = json.loads((out / "state.json").read_text())
    assert (
        state["completed"]["1"] == ["generate", "reward", "accept", "select"]
        and (out / "round_00/model/config.json").exists()
    )


def test_zero_accepted_with_on_empty_carry(tmp_path, capsys, caplog):
    out = tmp_path / "run"
    rc, _ = run_cli(capsys, out, "rounds=2", "accept.rule=threshold", "accept.threshold=2.0", "accept.on_empty=carry")
    assert rc == 0
    assert (
        "round 1 accepted no samples" in caplog.text
        and "carrying round 0's model forward (accept.on_empty=carry)" in caplog.text
    )
    state = json.loads((out / "state.json").read_text())
    assert state["finished"] and state["carried_models"] == {
        "1": str(out / "round_00/model"),
        "2": str(out / "round_00/model"),
    }
    assert not (out / "round_01/model").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-round run; tests copy it before damaging it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert main(["run", "recipes/addition_tiny.yaml", *TINY, f"output_dir={out}"]) == 0
    finally:
        os.chdir(cwd)
    return out


def copy_run(src: Path, out: Path) -> None:
    shutil.copytree(src, out)
    config = out / "config.yaml"
    config.write_text(config.read_text().replace(str(src), str(out)))  # same recipe, new output_dir


def test_corrupt_checkpoint_names_it_and_says_what_to_do(finished_run, tmp_path, capsys):
    out = tmp_path / "run"
    copy_run(finished_run, out)
    weights = out / "round_01/model/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, e.g. by a full disk during a copy
    rc, err = run_cli(capsys, out, "rounds=2")
    assert rc == 2
    assert f"checkpoint '{out / 'round_01/model'}' could not be loaded" in err and "corrupt or truncated" in err
    assert f"Delete the directory '{out / 'round_01/model'}' and run the same command again" in err
    assert json.loads((out / "state.json").read_text())["completed"]["1"] == [
        "generate",
        "reward",
        "accept",
        "select",
        "train",
        "eval",
    ]
    # Doing what it says works: round 1 is retrained from its accepted set, round 2 runs.
    shutil.rmtree(out / "round_01/model")
    assert run_cli(capsys, out, "rounds=2")[0] == 0
    state = json.loads((out / "state.json").read_text())
    assert state["finished"] and (out / "round_01/model/model.safetensors").stat().st_size > 1000
    assert [json.loads(x)["round"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]


def test_full_disk_keeps_state_and_earlier_rounds(finished_run, tmp_path):
    """RLIMIT_FSIZE makes every write past 200 kB fail like a full disk: round 2's checkpoint cannot be saved."""
    out = tmp_path / "run"
    copy_run(finished_run, out)
    before = files(out)
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # noqa: E731
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rsft_gen.cli",
            "run",
            "recipes/addition_tiny.yaml",
            *TINY,
            f"output_dir={out}",
            "rounds=2",
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"rsft-gen: error: writing to output directory '{out}' failed: File too large" in proc.stderr
    assert "state.json and the completed phases are intact" in proc.stderr and "Traceback" not in proc.stderr
    after = files(out)
    for (
        rel,
        data,
    ) in before.items():  # nothing written before is lost or changed (state.json grew, config.yaml has rounds: 2)
        if rel not in ("state.json", "config.yaml"):
            assert after[rel] == data, rel
    state = json.loads(after["state.json"])
    assert state["completed"]["1"] == ["generate", "reward", "accept", "select", "train", "eval"]
    assert state["completed"]["2"] == ["generate", "reward", "accept", "select"]
    assert not [r for r in after if r.endswith(".tmp")]
