"""The train phase in several processes: `accelerate launch` of this module.

    train.num_processes: 4
    train.accelerate_config: configs/accelerate/deepspeed_zero2.yaml   # optional; default plain DDP

With num_processes > 1 the loop calls `launch_train` instead of `train.train_sft`;
it writes the SFT set and the settings next to the round's checkpoint, and runs

    accelerate launch --num_processes N [--config_file CFG] [--cpu] -m rsft_gen.train_launch WORK_DIR

Each child (`main`) runs `train_sft` with that shared work directory (TRL +
accelerate handle DDP, DeepSpeed or FSDP); rank 0 publishes the checkpoint and writes metrics.json, which the
parent returns. `per_device_train_batch_size` is per process, as in TRL: the
global batch is train.batch_size x num_processes x gradient_accumulation_steps.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from rsft_gen.config import TrainConfig
from rsft_gen.train import train_sft


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(cfg: TrainConfig, work_dir: Path) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(cfg.num_processes),
        "--num_machines",
        "1",
    ]
    if cfg.accelerate_config:
        cmd += ["--config_file", cfg.accelerate_config]
    else:
        # torchrun-style DDP; on CPU the children's use_cpu=True makes accelerate pick gloo.
        # (`--cpu` would start a single process: accelerate leaves multi-CPU to mpirun.)
        cmd += [
            "--multi_gpu",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_free_port()),
        ]
    return cmd + ["-m", "rsft_gen.train_launch", str(work_dir)]


def launch_train(
    model_dir, sft: pd.DataFrame, out_dir: Path, cfg: TrainConfig, device: str, seed: int, report_to
) -> dict:
    """Run train_sft in cfg.num_processes accelerate processes; returns rank 0's metrics."""
    work = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(work, ignore_errors=True)  # leftovers of a crashed attempt
    work.mkdir(parents=True)
    sft[["prompt", "completion"]].to_parquet(work / "sft.parquet")
    spec = {
        "model_dir": str(model_dir),
        "out_dir": str(out_dir),
        "cfg": asdict(cfg),
        "device": device,
        "seed": seed,
        "report_to": list(report_to or []),
    }
    (work / "spec.json").write_text(json.dumps(spec))
    cmd = launch_command(cfg, work)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise RuntimeError(
            f"training child processes failed (exit {proc.returncode}); command: {' '.join(cmd)}. "
            f"Their output is above."
        )
    return json.loads((out_dir / "train_metrics.json").read_text())


def main(work_dir: str) -> None:
    """One launched process: train_sft with the work directory every process shares."""
    work = Path(work_dir)
    spec = json.loads((work / "spec.json").read_text())
    sft = pd.read_parquet(work / "sft.parquet")
    out_dir = Path(spec["out_dir"])
    metrics = train_sft(
        spec["model_dir"],
        sft,
        out_dir,
        TrainConfig(**spec["cfg"]),
        spec["device"],
        spec["seed"],
        spec["report_to"],
        work_dir=work,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        (out_dir / "train_metrics.json").write_text(json.dumps(metrics))


if __name__ == "__main__":
    main(sys.argv[1])
