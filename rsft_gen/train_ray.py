"""The train phase across machines: `accelerate launch` once per node of the Ray cluster (train.num_machines).

    rsft-gen run RECIPE generate.ray_address=HEAD_IP:6379 train.num_machines=2 train.num_processes=16

Machine rank 0 runs on the head's node (this process's), ranks 1.. on other alive
nodes, each as a Ray task that asks for no CPU or GPU: the generation actors keep
their reservations through training (their engines sleep), and accelerate uses the
node's devices itself. Each task runs the command train_launch builds, with its
--machine_rank and rank 0's node address; torch.distributed connects them. The work
directory (SFT set, settings) and the checkpoint must be on a filesystem every node
sees at the same path, as the run directory already is for generate.executor: ray.

With fewer alive nodes than machines (a one-node test cluster) ranks share nodes, with
a warning. If any machine's launch fails, the others are cancelled and the error names
its rank, node and the end of its output.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from pathlib import Path
from typing import Callable

from rsft_gen.config import TrainConfig
from rsft_gen.executor_ray import _ray, connect

log = logging.getLogger(__name__)
ENV_PREFIXES = ("RSFT_GEN_", "WANDB_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "NCCL_", "GLOO_", "TORCH_")
OUTPUT_TAIL = 4000  # characters of a failed machine's output in the error


def _run_machine(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """One machine's `accelerate launch`; its output goes to this node's Ray logs (shown on the head) and its tail
    comes back."""
    proc = subprocess.run(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(proc.stdout[-20000:], flush=True)  # Ray forwards a task's prints to the head's terminal
    return proc.returncode, proc.stdout[-OUTPUT_TAIL:]


@functools.cache
def _tasks(free_port: Callable[[], int]):
    ray = _ray()
    return ray.remote(num_cpus=0, max_retries=0)(_run_machine), ray.remote(num_cpus=0)(free_port)


def pick_nodes(n: int) -> list[tuple[str, str]]:
    """(node id, address) for machine ranks 0..n-1: this process's node first, then the other alive nodes."""
    ray = _ray()
    here = ray.get_runtime_context().get_node_id()
    alive = [(node["NodeID"], node["NodeManagerAddress"]) for node in ray.nodes() if node.get("Alive")]
    alive.sort(key=lambda node: (node[0] != here, node[1]))
    if len(alive) < n:
        log.warning(
            "train.num_machines=%d but the Ray cluster has %d alive nodes: several machine ranks share a node",
            n,
            len(alive),
        )
    return [alive[i % len(alive)] for i in range(n)]


def run_on_machines(
    cfg: TrainConfig,
    work: Path,
    address: str | None,
    command: Callable[[int, str, int], list[str]],
    free_port: Callable[[], int],
) -> None:
    """Run command(machine_rank, main_ip, port) on every machine; returns when all finished, raises if one failed.
    `free_port` runs on rank 0's node to pick the port (both come from train_launch, which calls this)."""
    connect(address)
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    run_machine, free_port = _tasks(free_port)
    nodes = pick_nodes(cfg.num_machines)

    def on(node_id: str):
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}

    main_ip = nodes[0][1]
    port = ray.get(free_port.options(**on(nodes[0][0])).remote())
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    refs = {}
    for rank, (node_id, ip) in enumerate(nodes):
        cmd = command(rank, main_ip, port)
        refs[run_machine.options(**on(node_id)).remote(cmd, env)] = (rank, ip)
    log.info("train: %d machines, main process %s:%d, %d processes", len(nodes), main_ip, port, cfg.num_processes)
    pending = list(refs)
    while pending:
        (ref,), pending = ray.wait(pending, num_returns=1)
        rank, ip = refs[ref]
        try:
            code, tail = ray.get(ref)
        except ray.exceptions.RayError as e:  # the task or its node died
            code, tail = -1, f"{type(e).__name__}: {e}"
        if code != 0:
            for other in pending:  # the others would wait for it in their collectives until a timeout
                ray.cancel(other, force=True)
            raise RuntimeError(
                f"training on machine rank {rank} (node {ip}) failed (exit {code}); the other machines were "
                f"stopped. Work directory: {work}. End of its output:\n{tail}"
            )
