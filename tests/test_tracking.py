"""W&B tracking, read back from a real offline run.

A tiny loop runs round 0 and 1, stops, and is resumed for round 2, with
tracking.wandb.mode=offline. wandb writes its records to
RUN_DIR/wandb/offline-run-*/run-ID.wandb: a LevelDB-style log (32 KiB blocks of
checksummed chunks) of `wandb.proto.wandb_internal_pb2.Record` messages, the
same file `wandb sync` uploads. We parse it with wandb's own protobuf classes
and check what a user would see online: the round metrics against `round`, the
samples tables (whose JSON files sit under files/media/table), the accepted-set
artifacts, the recipe as config, and one run id across the resume.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest

from rsft_gen.config import load_recipe, to_dict
from rsft_gen.evaluate import evaluate_checkpoint
from rsft_gen.loop import run
from rsft_gen.state import RunState
from rsft_gen.tracking import Tracker, api_key_configured, make_tracker, resolve_mode, samples_table, wandb_key

# ---------------------------------------------------------------- reading a .wandb file

BLOCK, HEADER = 32768, 7  # LevelDB log layout used by wandb's transaction log
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list:
    """Every Record in a .wandb file, checksums verified."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path} is not a wandb transaction log"
    records, pos, parts = [], HEADER, []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer too small for a header: zero padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        assert zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF == crc, f"bad checksum at byte {pos} of {path}"
        pos += HEADER + length
        parts.append(chunk)
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            records.append(rec)
            parts = []
    return records


def history_rows(records) -> list[dict]:
    rows = []
    for rec in records:
        if rec.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in rec.history.item:
            keys = list(item.nested_key) or [item.key]
            node = row
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = json.loads(item.value_json)
        rows.append(row)
    return rows


def of_type(records, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


# ---------------------------------------------------------------- the real run


def _recipe(out: Path, rounds: int):
    return load_recipe(
        "recipes/addition_tiny.yaml",
        [
            f"output_dir={out}",
            f"rounds={rounds}",
            "data.train_prompts=16",
            "data.eval_prompts=8",
            "seed_sft.n=32",
            "seed_sft.epochs=1",
            "generate.n=2",
            "eval.n=2",
            "eval.k=[1,2]",
            "accept.rule=all",
            "generate.log_q=true",  # the samples table then shows real log q values
            "train.batch_size=16",
            "train.logging_steps=1",  # TRL logs its loss every step: the per-round curves
            "tracking.wandb.mode=offline",
            "tracking.wandb.table_rows=10",
        ],
    )


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    """No network, no user files: wandb's data, cache and config dirs in tmp; no key anywhere."""
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        for var in (
            "WANDB_DIR",
            "WANDB_API_KEY",
            "WANDB_PROJECT",
            "WANDB_ENTITY",
            "WANDB_BASE_URL",
            "WANDB_DISABLED",
            "WANDB_RUN_ID",
            "WANDB_RESUME",
        ):
            mp.delenv(var, raising=False)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("NETRC", str(home / "no-netrc"))
        for var, sub in (
            ("WANDB_DATA_DIR", "data"),
            ("WANDB_CACHE_DIR", "cache"),
            ("WANDB_CONFIG_DIR", "config"),
            ("WANDB_ARTIFACT_DIR", "artifacts"),
        ):
            mp.setenv(var, str(home / sub))
        yield home


@pytest.fixture(scope="module")
def run_dir(wandb_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("tracked") / "run"
    run(_recipe(out, rounds=1))  # rounds 0 and 1, then the process "stops" ...
    run(_recipe(out, rounds=2))  # ... and a second invocation resumes with round 2
    return out


@pytest.fixture(scope="module")
def wandb_files(run_dir) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # timestamped names: start order


@pytest.fixture(scope="module")
def records(wandb_files) -> list[list]:
    return [read_wandb_records(f) for f in wandb_files]


def jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_one_wandb_run_under_the_run_dir_continued_on_resume(run_dir, wandb_files, records):
    assert len(wandb_files) == 2, "one offline run directory per invocation, both under RUN_DIR/wandb"
    run_id = RunState(run_dir).get("wandb_run_id")
    assert run_id and all(f.name == f"run-{run_id}.wandb" for f in wandb_files)
    for recs in records:
        (run_rec,) = of_type(recs, "run")
        assert run_rec.run_id == run_id and run_rec.project == "rsft-gen" and run_rec.display_name == "addition_tiny"
        (exit_rec,) = of_type(recs, "exit")
        assert exit_rec.exit_code == 0


def test_round_metrics_are_logged_once_per_round_against_the_round_step(run_dir, records):
    expected = {rec["round"]: rec for rec in jsonl(run_dir)}
    assert sorted(expected) == [0, 1, 2]
    seen: dict[int, dict] = {}
    for recs in records:
        for row in history_rows(recs):
            if "eval/accuracy" in row:
                assert row["round"] not in seen, f"round {row['round']} logged twice"
                seen[row["round"]] = row
    assert sorted(seen) == [0, 1, 2]
    for r, rec in expected.items():
        for key, value in rec.items():
            got = seen[r][wandb_key(key)]
            assert got == pytest.approx(value), (r, key)
    assert "sft/loss" in seen[1] and "eval/pass@2" in seen[2] and "eval/maj@2" in seen[2]
    # every round-level key has its own definition with step metric `round`, in each process,
    # so TRL's later define_metric("*", step_metric="train/global_step") does not capture it
    for recs in records:
        defined = {m.name: m.step_metric for m in of_type(recs, "metric") if m.name}
        assert "round" in defined
        logged = {
            k
            for row in history_rows(recs)
            if "eval/accuracy" in row
            for k in row
            if not k.startswith("_") and k != "round"
        }
        assert logged and all(defined.get(k) == "round" for k in logged), {k: defined.get(k) for k in logged}


def test_each_rounds_sft_loss_curve_is_kept(run_dir, records):
    """TRL's train/global_step restarts every round; no logged step is lost or merged."""
    steps = [row["train/global_step"] for recs in records for row in history_rows(recs) if "train/loss" in row]
    per_round = [rec["train/steps"] for rec in jsonl(run_dir)]
    assert len(steps) == sum(per_round)
    expected = [s for n in per_round for s in range(1, n + 1)]
    assert steps == expected  # e.g. [1, 2, 1, 2, 1, 2]: one curve per round, in order


def test_samples_table_holds_the_decided_samples_capped_at_table_rows(run_dir, wandb_files, records):
    tables = {}
    for f, recs in zip(wandb_files, records):
        for row in history_rows(recs):
            if "samples" in row:
                tables[row["round"]] = json.loads((f.parent / "files" / row["samples"]["path"]).read_text())
    assert sorted(tables) == [1, 2]
    for r, table in tables.items():
        # decided.parquet: the reward phase's scored.parquet + the accept decisions the table shows
        scored = pd.read_parquet(run_dir / f"round_{r:02d}" / "decided.parquet").sort_values(
            ["prompt_id", "sample_index"]
        )
        assert table["columns"] == [
            "prompt_id",
            "prompt",
            "completion",
            "answer",
            "reward/exact_match",
            "reward",
            "log_q",
            "accept_prob",
            "accepted",
        ]
        assert len(table["data"]) == min(10, len(scored)) == 10
        got = pd.DataFrame(table["data"], columns=table["columns"])
        want = scored.head(10).reset_index(drop=True)
        assert got["completion"].tolist() == want["completion"].tolist()
        assert got["prompt"].tolist() == want["prompt"].tolist()
        assert got["accepted"].tolist() == want["accepted"].tolist()
        assert got["log_q"].tolist() == pytest.approx(want["log_q"].tolist())
        assert got["reward/exact_match"].tolist() == pytest.approx(want["reward/exact_match"].tolist())


def test_accepted_set_is_an_artifact_per_round(run_dir, records):
    run_id = RunState(run_dir).get("wandb_run_id")
    arts = [a for recs in records for a in of_type(recs, "artifact") if a.type == "dataset"]
    assert [a.name for a in arts] == [f"accepted-{run_id}"] * 2
    for r, art in zip((1, 2), arts):
        assert f"round_{r:02d}" in art.aliases
        (entry,) = art.manifest.contents
        path = run_dir / f"round_{r:02d}" / "accepted.parquet"
        assert entry.path == f"round_{r:02d}/accepted.parquet"
        assert entry.digest == base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def test_a_redone_accept_phase_does_not_log_the_samples_twice(wandb_env, tmp_path):
    """A crash after W&B logged round 1's samples table and accepted set, but before the accept
    phase was marked done: the resumed process redoes the phase and calls log_samples again."""
    from rsft_gen.state import round_dir, write_parquet

    run_dir = tmp_path / "run"
    recipe = _recipe(run_dir, rounds=1)
    decided = pd.DataFrame(
        {
            "prompt_id": [0, 1],
            "prompt": ["a", "b"],
            "completion": ["1", "2"],
            "reward": [1.0, 0.0],
            "accepted": [True, False],
        }
    )
    write_parquet(round_dir(run_dir, 1) / "accepted.parquet", decided[decided.accepted])
    for _ in range(2):  # the first process dies after logging; the second is the resume
        state = RunState(run_dir)  # what the resumed process reads from disk
        tracker = make_tracker(recipe, run_dir, state)
        tracker.log_samples(1, decided)
        tracker.close()
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    recs = [r for f in files for r in read_wandb_records(f)]
    assert len(files) == 2 and len({r.run.run_id for r in recs if r.WhichOneof("record_type") == "run"}) == 1
    assert [row["round"] for row in history_rows(recs) if "samples" in row] == [1]
    assert len([a for a in of_type(recs, "artifact") if a.type == "dataset"]) == 1
    assert RunState(run_dir).get("wandb_logged") == {"samples": [1], "accepted": [1]}


def test_run_config_is_the_resolved_recipe(run_dir, records):
    config: dict = {}
    for rec in of_type(records[0], "run")[0].config.update:
        config[rec.key] = json.loads(rec.value_json)
    for cfg in of_type(records[0], "config"):  # later updates, TRL's TrainingArguments among them
        for item in cfg.update:
            config[item.key] = json.loads(item.value_json)
    recipe = to_dict(_recipe(run_dir, rounds=1))
    for key, value in recipe.items():
        assert config[key] == value, key  # TRL's `seed` and `output_dir` did not overwrite ours
    assert "learning_rate" in config  # TRL's arguments are there too, beside the recipe


def test_eval_command_reproduces_a_rounds_eval(run_dir, capsys):
    from rsft_gen.cli import main

    metrics, greedy, where = evaluate_checkpoint(run_dir, 1)
    assert where["round"] == 1 and where["model"] == str(run_dir / "round_01" / "model")
    assert metrics == json.loads((run_dir / "round_01" / "eval.json").read_text())
    saved = pd.read_parquet(run_dir / "round_01" / "eval_samples.parquet")
    assert greedy["completion"].tolist() == saved["completion"].tolist()
    # the command, on the latest round by default
    assert main(["eval", str(run_dir)]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((run_dir / "round_02" / "eval.json").read_text())
    assert (
        main(["eval", str(run_dir), "--round", "7", "eval.n=2"]) == 2
    )  # no such round: a clear error, not a traceback
    assert "round 7" in capsys.readouterr().err


# ---------------------------------------------------------------- no W&B process needed


def test_mode_resolution(monkeypatch, tmp_path):
    from rsft_gen.config import RecipeError, WandbConfig

    for var in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not api_key_configured() and resolve_mode(WandbConfig()) == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    assert api_key_configured() and resolve_mode(WandbConfig()) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(WandbConfig()) == "disabled"  # the environment decides when the recipe doesn't
    assert resolve_mode(WandbConfig(mode="offline")) == "offline"  # the recipe wins when it says
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode(WandbConfig()) == "offline"
    with pytest.raises(RecipeError, match="tracking.wandb.mode"):
        resolve_mode(WandbConfig(mode="offlne"))


def test_disabled_tracker_still_writes_metrics_jsonl(tmp_path):
    recipe = load_recipe("recipes/addition_tiny.yaml", ["tracking.wandb.mode=disabled"])
    state = RunState(tmp_path)
    tracker = make_tracker(recipe, tmp_path, state)
    assert tracker.report_to == [] and tracker.run is None
    state.complete(0, "eval", {"eval/accuracy": 0.5, "time/eval_s": 2.0})
    tracker.log_round(0, {"round": 0})
    tracker.log_samples(0, pd.DataFrame({"prompt": ["a"]}))
    tracker.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {
        "round": 0,
        "eval/accuracy": 0.5,
        "time/eval_s": 2.0,
        "time/round_s": 2.0,
    }
    assert "wandb_run_id" not in state.data


def test_samples_table_columns_order_and_cap():
    decided = pd.DataFrame(
        {
            "prompt_id": [1, 0, 0, 1],
            "sample_index": [0, 1, 0, 1],
            "prompt": ["b", "a", "a", "b"],
            "completion": ["4", "3", "2", "5"],
            "token_ids": [[1], [2], [3], [4]],
            "reward/len": [1.0, float("nan"), 1.0, 1.0],
            "reward/exact_match": [0.0, 1.0, 0.0, 0.0],
            "reward": [1.0, 2.0, 1.0, 1.0],
            "accepted": [False, True, False, False],
        }
    )
    t = samples_table(decided, rows=3)
    assert list(t.columns) == [
        "prompt_id",
        "prompt",
        "completion",
        "reward/exact_match",
        "reward/len",
        "reward",
        "accepted",
    ]
    assert t["completion"].tolist() == ["2", "3", "4"]  # whole prompt groups first, in sampling order
    assert t["reward/len"].tolist() == [1.0, None, 1.0]  # NaN becomes null in the W&B table


def test_close_marks_the_wandb_run_failed_when_the_loop_raised(tmp_path):
    class FakeRun:
        id = "x"
        exit_code = None

        def finish(self, exit_code=0):
            self.exit_code = exit_code

    fake = FakeRun()
    tracker = Tracker(tmp_path, RunState(tmp_path), fake)
    assert tracker.report_to == ["wandb"]
    try:
        try:
            raise RuntimeError("round failed")
        finally:
            tracker.close()
    except RuntimeError:
        pass
    assert fake.exit_code == 1
