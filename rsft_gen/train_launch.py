"""The train phase in several processes: `accelerate launch` of this module.

    train.num_processes: 4
    train.accelerate_config: configs/accelerate/deepspeed_zero2.yaml   # optional; default plain DDP

With num_processes > 1 the loop calls `launch_train` instead of `train.train_sft`;
it writes the SFT set and the settings next to the round's checkpoint, and runs

    accelerate launch --num_processes N [--config_file CFG] [--cpu] -m rsft_gen.train_launch WORK_DIR

With train.num_machines > 1 the same command runs once per machine, each with its
--machine_rank, on the nodes of the Ray cluster (train_ray.py); the work directory
must then be on a filesystem every node sees at the same path, like the run directory.

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


def launch_command(
    cfg: TrainConfig, work_dir: Path, machine_rank: int = 0, main_ip: str | None = None, port: int | None = None
) -> list[str]:
    """`accelerate launch` for one machine; main_ip/port: machine rank 0's address (several machines)."""
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(cfg.num_processes),
        "--num_machines",
        str(cfg.num_machines),
    ]
    if cfg.num_machines > 1:
        cmd += ["--machine_rank", str(machine_rank), "--main_process_ip", str(main_ip)]
    if cfg.accelerate_config:
        cmd += ["--config_file", os.path.abspath(cfg.accelerate_config)]  # other machines start elsewhere
    else:
        # torchrun-style DDP; on CPU the children's use_cpu=True makes accelerate pick gloo.
        # (`--cpu` would start a single process: accelerate leaves multi-CPU to mpirun.)
        cmd += [
            "--multi_gpu",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ]
    if cfg.num_machines > 1 or not cfg.accelerate_config:
        cmd += ["--main_process_port", str(port or _free_port())]
    return cmd + ["-m", "rsft_gen.train_launch", str(work_dir)]


def launch_train(
    model_dir,
    sft: pd.DataFrame,
    out_dir: Path,
    cfg: TrainConfig,
    device: str,
    seed: int,
    report_to,
    ray_address: str | None = None,
) -> dict:
    """Run train_sft in cfg.num_processes accelerate processes (on cfg.num_machines Ray nodes when > 1);
    returns rank 0's metrics."""
    out_dir = Path(out_dir).absolute()  # paths every machine resolves alike (the run dir is shared, same path)
    model_dir = os.path.abspath(model_dir) if os.path.exists(model_dir) else model_dir  # a hub id stays as it is
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
    if cfg.num_machines > 1:
        from rsft_gen.train_ray import run_on_machines

        run_on_machines(cfg, work, ray_address, lambda *where: launch_command(cfg, work, *where), _free_port)
        return json.loads((out_dir / "train_metrics.json").read_text())
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
        world, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        metrics["train/machines"] = world // max(local, 1)  # torchrun's view: the machines that joined
        (out_dir / "train_metrics.json").write_text(json.dumps(metrics))


if __name__ == "__main__":
    main(sys.argv[1])
