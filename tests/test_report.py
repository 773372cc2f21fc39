"""`rsft-gen report`: report.md and report.png hold the numbers of metrics.jsonl."""

from __future__ import annotations

import json
import math

import pytest

from rsft_gen.cli import main
from rsft_gen.config import load_recipe, to_yaml
from rsft_gen.report import figure, write_report

RECORDS = [
    {
        "round": 0,
        "eval/accuracy": 0.125,
        "eval/pass@1": 0.1,
        "eval/pass@4": 0.3,
        "eval/maj@4": 0.15,
        "train/loss": 2.5,
        "time/round_s": 3.25,
    },
    {
        "round": 1,
        "eval/accuracy": 0.25,
        "eval/pass@1": 0.2,
        "eval/pass@4": 0.45,
        "eval/maj@4": 0.275,
        "accept/rate": 0.0625,
        "reward/mean": 0.0625,
        "reward/accepted_mean": 1.0,
        "select/sft_examples": 40,
        "train/loss": 1.75,
        "time/round_s": 10.5,
    },
    {
        "round": 2,
        "eval/accuracy": 0.5,
        "eval/pass@1": 0.4375,
        "eval/pass@4": 0.7,
        "eval/maj@4": 0.55,
        "accept/rate": 0.21875,
        "reward/mean": 0.21875,
        "reward/accepted_mean": float("nan"),
        "select/sft_examples": 140,
        "accept/bound_violations": 3,
        "train/loss": 1.125,
        "time/round_s": 12.0,
    },
]
TITLES = {
    "round": "round",
    "eval/accuracy": "eval acc",
    "eval/pass@1": "pass@1",
    "eval/pass@4": "pass@4",
    "eval/maj@4": "maj@4",
    "accept/rate": "accept rate",
    "reward/mean": "reward",
    "reward/accepted_mean": "reward (accepted)",
    "select/sft_examples": "SFT set",
    "accept/bound_violations": "bound violations",
    "train/loss": "SFT loss",
    "time/round_s": "seconds",
}


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    (d / "config.yaml").write_text(
        to_yaml(load_recipe("recipes/addition_tiny.yaml", [f"output_dir={d}", "eval.n=4", "eval.k=[1,4]"]))
    )
    return d


def parse_markdown_table(md: str) -> list[dict]:
    lines = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append(dict(zip(header, cells)))
    return rows


def test_report_md_holds_every_number_of_metrics_jsonl(run_dir):
    md_path, png_path = write_report(run_dir)
    md = md_path.read_text()
    rows = parse_markdown_table(md)
    assert list(rows[0]) == [
        "round",
        "eval acc",
        "pass@1",
        "pass@4",
        "maj@4",
        "accept rate",
        "reward",
        "reward (accepted)",
        "SFT set",
        "SFT loss",
        "bound violations",
        "seconds",
    ]
    assert len(rows) == len(RECORDS)
    for rec, row in zip(RECORDS, rows):
        for key, title in TITLES.items():
            value = rec.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                assert row[title] == "-", (rec["round"], key)
            else:
                assert float(row[title]) == pytest.approx(value, abs=5e-5), (rec["round"], key)
    assert "![" in md and "report.png" in md
    assert "round 2 (3)" in md  # the bound violations are called out
    assert "addition_tiny" in md and "eval: n=4" in md


def test_report_png_is_written_and_plots_the_metrics(run_dir):
    _, png_path = write_report(run_dir)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 10_000
    fig = figure(RECORDS, "t")
    plotted = {
        (ax.get_title(), line.get_label()): (list(line.get_xdata()), list(line.get_ydata()))
        for ax in fig.axes
        for line in ax.get_lines()
    }
    assert plotted[("evaluation", "eval acc")] == ([0, 1, 2], [0.125, 0.25, 0.5])
    assert plotted[("evaluation", "pass@4")] == ([0, 1, 2], [0.3, 0.45, 0.7])
    assert plotted[("evaluation", "maj@4")] == ([0, 1, 2], [0.15, 0.275, 0.55])
    assert plotted[("acceptance rate", "accept rate")] == ([1, 2], [0.0625, 0.21875])
    assert plotted[("reward", "all samples")] == ([1, 2], [0.0625, 0.21875])
    assert plotted[("reward", "accepted")] == ([1], [1.0])  # NaN rounds are left out, not drawn as 0


def test_report_command_prints_the_table(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "pass@4" in out and "0.4375" in out and "140" in out
    assert (run_dir / "report.md").exists() and (run_dir / "report.png").exists()


def test_report_of_a_directory_without_metrics_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err
