"""Run report: a table and plots of every round, from the run's metrics.jsonl.

    rsft-gen report runs/addition_tiny      # writes report.md and report.png there, prints the table

    from rsft_gen.report import write_report
    md_path, png_path = write_report(Path("runs/addition_tiny"))

The table has one row per round (0 = the starting model): eval accuracy,
pass@k and maj@k for each k evaluated, acceptance rate, mean reward of all and
of the accepted samples, SFT set size and loss, bound violations when the
acceptance rule counts them, and the round's wall time.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from rsft_gen.config import RecipeError
from rsft_gen.state import atomic_path, write_text

# (metrics.jsonl key, column title); pass@k / maj@k columns are added for each k found.
FIXED_COLUMNS = [
    ("eval/accuracy", "eval acc"),
    ("accept/rate", "accept rate"),
    ("reward/mean", "reward"),
    ("reward/accepted_mean", "reward (accepted)"),
    ("select/sft_examples", "SFT set"),
    ("train/loss", "SFT loss"),
    ("accept/bound_violations", "bound violations"),
    ("time/round_s", "seconds"),
]
_AT_K = re.compile(r"^eval/(pass|maj)@(\d+)$")


def load_records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise RecipeError(
            f"{path} does not exist; give the run directory of an `rsft-gen run` that has finished at least round 0."
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def columns(records: list[dict]) -> list[tuple[str, str]]:
    """The columns that at least one round has, in reading order."""
    present = set().union(*records) if records else set()
    at_k = sorted(
        (m.group(1) != "pass", int(m.group(2)), m.group(1), key) for key in present if (m := _AT_K.match(key))
    )
    eval_cols = [("eval/accuracy", "eval acc")] + [
        (key, f"{kind}@{k}") for _, k, kind, key in at_k
    ]  # pass@k, then maj@k
    cols = [("round", "round")] + eval_cols + FIXED_COLUMNS[1:]
    return [(key, title) for key, title in cols if key in present]


def fmt(value) -> str:
    """How a number appears in the tables: integers as is, other numbers with 4 decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def table_rows(records: list[dict], cols: list[tuple[str, str]]) -> list[list[str]]:
    return [[fmt(rec.get(key)) for key, _ in cols] for rec in records]


def markdown_table(records: list[dict]) -> str:
    cols = columns(records)
    lines = ["| " + " | ".join(title for _, title in cols) + " |", "|" + "|".join("---:" for _ in cols) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(records, cols)]
    return "\n".join(lines)


def rich_table(records: list[dict], title: str = "rsft-gen rounds"):
    from rich.table import Table

    cols = columns(records)
    table = Table(title=title)
    for _, name in cols:
        table.add_column(name, justify="right")
    for row in table_rows(records, cols):
        table.add_row(*row)
    return table


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(rec["round"], rec[key]) for rec in records if rec.get(key) is not None and rec[key] == rec[key]]
    return [p[0] for p in pts], [p[1] for p in pts]


def figure(records: list[dict], title: str):
    """Four panels by round: eval (accuracy, pass@k, maj@k), acceptance rate, reward, SFT loss."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    cols = columns(records)
    keys = {key for key, _ in cols}
    panels = [
        ("evaluation", [(k, t) for k, t in cols if k.startswith("eval/")], (-0.02, 1.02)),
        ("acceptance rate", [("accept/rate", "accept rate")], (-0.02, 1.02)),
        ("reward", [("reward/mean", "all samples"), ("reward/accepted_mean", "accepted")], None),
        ("SFT loss", [("train/loss", "mean SFT loss")], None),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    for ax, (name, lines, ylim) in zip(axes.flat, panels):
        for key, label in lines:
            if key in keys:
                x, y = _series(records, key)
                ax.plot(x, y, marker="o", label=label)
        ax.set_title(name)
        ax.set_xlabel("round")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ylim:
            ax.set_ylim(*ylim)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def plot(records: list[dict], path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig = figure(records, title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _recipe_line(run_dir: Path) -> tuple[str, str]:
    """(name, one line describing the recipe) from config.yaml, if there is one."""
    cfg = run_dir / "config.yaml"
    if not cfg.exists():
        return run_dir.name, ""
    from omegaconf import OmegaConf

    c = OmegaConf.load(cfg)
    rewards = ", ".join(str(r.name) for r in c.get("rewards", []))
    desc = (
        f"model `{c.model.path}`, k={c.generate.n} at temperature {c.generate.temperature}, rewards: {rewards}, "
        f"accept: `{c.accept.rule}`, eval: n={c.eval.n}"
    )
    return str(c.get("name", run_dir.name)), desc


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """Write report.md and report.png into run_dir; returns their paths."""
    run_dir = Path(run_dir)
    records = load_records(run_dir)
    name, desc = _recipe_line(run_dir)
    png = run_dir / "report.png"
    plot(records, png, f"{name}: rounds {records[0]['round']}-{records[-1]['round']}" if records else name)
    parts = [f"# rsft-gen report: {name}", "", f"Run directory: `{run_dir}`  "]
    if desc:
        parts.append(f"Recipe: {desc}")
    parts += [
        "",
        "Round 0 is the starting model (after the seed SFT, if any); "
        "round r is trained on what round r sampled and accepted.",
        "",
    ]
    parts += [markdown_table(records), "", "![eval, acceptance and reward by round](report.png)", ""]
    violated = [
        f"round {rec['round']} ({rec['accept/bound_violations']})"
        for rec in records
        if rec.get("accept/bound_violations")
    ]
    if violated:
        parts += [
            "**Bound violations** (samples with p/q > M, so the accepted set is not an exact sample of the target): "
            f"{', '.join(violated)}.",
            "",
        ]
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    if offline:
        parts += [f"W&B runs stored offline; upload with `wandb sync {' '.join(str(p) for p in offline)}`.", ""]
    md = run_dir / "report.md"
    write_text(md, "\n".join(parts))
    return md, png


def console(stderr: bool = False):
    from rich.console import Console

    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=200)  # piped or logged: don't squeeze to 80 columns


def print_report(run_dir: Path) -> None:
    md, png = write_report(run_dir)
    console().print(rich_table(load_records(Path(run_dir)), title=f"rsft-gen report: {run_dir}"))
    console().print(f"wrote {md} and {png}")
