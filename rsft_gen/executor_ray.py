"""Generation shards and CPU-heavy rewards over a Ray cluster (generate.executor: ray, rewards[].executor: ray).

    rsft-gen run recipes/addition_tiny.yaml generate.executor=ray generate.workers=2
    rsft-gen run RECIPE generate.executor=ray generate.ray_address=HEAD_IP:6379   # an existing cluster

    pool = RayShardPool(recipe)              # generate.workers actors, one engine each
    stats = pool.run(todo, model_dir)        # the missing shards of a round, each written by its worker
    pool.release(); pool.close()

Each actor holds one engine, built and kept exactly as the local loop keeps its
own (backends.GeneratorCache: HF, or vLLM on the actor's GPUs with
generate.vllm.*, asleep between rounds where vLLM can sleep, weights reloaded
for each round's checkpoint). The head hands out shards, two per actor at a
time so an actor never waits for its next one; the actor samples the shard and
writes it atomically to round_XX/candidates/ (the run directory must be on a
filesystem every node sees at the same path). Shards are seeded by (seed,
round, index) alone, so the round's candidates are the same as local, whoever
computed each shard.

Faults: an actor that dies (killed, OOM, node lost) raises RayActorError for the
shards it held; only those are lost and go back in the queue for the other
actors, or for the head itself once no actor is left. Finished shards are on
disk and kept. A dead actor is replaced at the start of the next round. A head
that dies resumes from disk as always: only the shards not yet written are run.

Connecting: generate.ray_address names a running cluster ("HEAD_IP:6379" or
"ray://HEAD_IP:10001"); without it ray.init() attaches to RAY_ADDRESS or a
cluster started on this node with `ray start --head`, else starts a private
one on this machine, shut down with the run. Workers import rsft_gen from
their own Python environment: install the same rsft-gen on every node.

Rewards with `executor: ray` are wrapped (`remote_reward`): the candidates are
split into contiguous chunks, each scored by the reward in a Ray task, and the
values concatenated in order, so `rewards.score` sees the same list as local.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from rsft_gen import faults
from rsft_gen.config import Recipe, RecipeError
from rsft_gen.shards import ShardJob, ShardStats, run_shard

log = logging.getLogger(__name__)
IN_FLIGHT = 2  # shards queued per actor: the next one is already there when the current one is written
READY_TIMEOUT_S = 600  # an actor that cannot be placed in this long (no free GPU/CPU?) is given up on


def _ray():
    try:
        import ray
    except ImportError:
        raise RecipeError(
            "generate.executor: ray (or rewards[].executor: ray) needs Ray; install it with "
            "`pip install 'rsft-gen[ray]'` (or `pip install ray`) on every node."
        ) from None
    return ray


def connect(address: str | None = None) -> bool:
    """Attach to a Ray cluster (or start a local one); True when this call started Ray in this process."""
    ray = _ray()
    if ray.is_initialized():  # e.g. the tests' local cluster, or the rewards after generation
        return False
    # A cluster started here runs its workers at this process's priority, as the local executor would;
    # Ray's default (+15) makes them yield to everything else on a shared machine. Attaching changes nothing.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address=address, log_to_driver=True)
    res = ray.cluster_resources()
    log.info(
        "ray: %s, %d nodes, %.0f CPUs, %.0f GPUs",
        address or "auto",
        len([n for n in ray.nodes() if n.get("Alive")]),
        res.get("CPU", 0),
        res.get("GPU", 0),
    )
    return True


class ShardWorker:
    """One actor: one engine, kept across rounds like the local loop keeps its own."""

    def __init__(self, recipe: Recipe, cpus: float):
        self.recipe, self.cache, self.cpus = recipe, None, cpus
        if cpus >= 1:  # torch's intra-op threads = the CPUs Ray gave this actor, not the node's
            import torch

            torch.set_num_threads(int(cpus))

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        return _ray().get_runtime_context().get_node_id()

    def pin(self, index: int) -> list[int]:
        """Bind this actor (all its threads, and the engine processes it starts later) to its own
        int(cpus) cores: the `index`-th such block of the node's cores. Ray counts CPUs but does not pin
        them, and vLLM's CPU build binds its OpenMP threads to every core the process may use, so two
        actors on one node would otherwise spin on the same cores. No pinning where the blocks do not fit."""
        cores, n = sorted(os.sched_getaffinity(0)), max(1, int(self.cpus))
        mine = cores[index * n : (index + 1) * n]
        if len(mine) < n:
            return cores
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), mine)
            except OSError:  # a thread that has just ended
                pass
        return mine

    def run(self, job: ShardJob, model_dir: str) -> tuple[int, float]:
        if self.cache is None:
            from rsft_gen.backends import GeneratorCache, pick_device

            self.cache = GeneratorCache(self.recipe, pick_device(self.recipe.device))  # sees the GPUs Ray assigned
        return run_shard(self.cache.get(model_dir), job, progress=False)  # the head shows one bar over the shards

    def release(self) -> None:
        """Free the engine's memory before training (vLLM with sleep mode sleeps; others close)."""
        if self.cache is not None:
            self.cache.release()


def worker_gpus(recipe: Recipe, cluster_gpus: float) -> float:
    """generate.worker_gpus, or: a vLLM engine's tensor x pipeline parallel size when the cluster has GPUs."""
    g = recipe.generate
    if g.worker_gpus is not None:
        return g.worker_gpus
    if cluster_gpus <= 0:
        return 0.0
    return float(g.vllm.get("tensor_parallel_size", 1) * g.vllm.get("pipeline_parallel_size", 1))


class RayShardPool:
    """generate.workers ShardWorker actors; `run` hands them a round's missing shards."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.started_ray = connect(recipe.generate.ray_address)
        ray = _ray()
        self.cpus = recipe.generate.worker_cpus
        self.gpus = worker_gpus(recipe, ray.cluster_resources().get("GPU", 0))
        # max_restarts=0: a dead actor is replaced by us, between rounds, rather than by Ray under a running shard.
        self.actor_class = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0)(ShardWorker)
        self.actors: dict[int, object] = {}
        self.cores: dict[int, tuple[str, int]] = {}  # slot -> (node id, its block of cores on that node)
        self.top_up()

    def top_up(self) -> None:
        """Start actors for the empty slots (all at first; dead ones' later), and wait until each is placed."""
        ray = _ray()
        new = {
            slot: self.actor_class.remote(self.recipe, self.cpus)
            for slot in range(self.recipe.generate.workers)
            if slot not in self.actors
        }
        if not new:
            return
        pings = {actor.pid.remote(): slot for slot, actor in new.items()}
        ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=READY_TIMEOUT_S)
        for ref in ready:
            try:
                ray.get(ref)
                self.actors[pings[ref]] = new[pings[ref]]
            except ray.exceptions.RayError as e:
                log.warning("ray: worker %d failed to start: %s", pings[ref], e)
        self.pin_cores([slot for slot in new if slot in self.actors])
        missing = sorted(set(new) - set(self.actors))
        if missing:
            for slot in missing:
                ray.kill(new[slot])
            log.warning(
                "ray: workers %s could not be started within %ds (each needs %.2g CPUs, %.2g GPUs; cluster "
                "has %s); going on with %d",
                missing,
                READY_TIMEOUT_S,
                self.cpus,
                self.gpus,
                ray.available_resources(),
                len(self.actors),
            )
        if not self.actors:
            raise RecipeError(
                f"generate.executor=ray: none of the {self.recipe.generate.workers} workers could be "
                f"placed ({self.cpus} CPUs, {self.gpus} GPUs each); lower generate.worker_cpus / "
                f"generate.worker_gpus or generate.workers, or add nodes."
            )

    def pin_cores(self, slots: list[int]) -> None:
        """CPU actors: each new one gets a block of cores no other live actor on its node holds."""
        if self.gpus > 0 or self.cpus < 1 or not slots:
            return
        ray = _ray()
        nodes = dict(zip(slots, ray.get([self.actors[s].node.remote() for s in slots])))
        for slot in slots:
            taken = {i for s, (node, i) in self.cores.items() if node == nodes[slot] and s in self.actors}
            index = min(set(range(len(taken) + 1)) - taken)
            self.cores[slot] = (nodes[slot], index)
            log.info("ray: worker %d pinned to cores %s", slot, ray.get(self.actors[slot].pin.remote(index)))

    def pids(self) -> dict[int, int]:
        """slot -> process id of each live actor (the tests kill one)."""
        ray = _ray()
        return {slot: ray.get(actor.pid.remote()) for slot, actor in self.actors.items()}

    def run(
        self, jobs: list[ShardJob], model_dir: str, run_on_head: Callable[[ShardJob], tuple[int, float]] | None = None
    ) -> ShardStats:
        """Run the shards on the actors; a shard whose actor dies is re-queued. Returns the round's stats.

        `run_on_head(job)` runs a shard in this process when no actor is left (default: an HF/vLLM
        generator made here for the purpose).
        """
        ray = _ray()
        self.top_up()
        path = Path(model_dir)
        model_dir = str(path.resolve()) if path.exists() else model_dir  # hub ids stay as they are
        stats, start = ShardStats(), time.perf_counter()
        pending, in_flight = deque(jobs), {}  # ref -> (slot, job)
        head_gen = None
        bar = tqdm(total=len(jobs), desc=f"generate (ray, {len(self.actors)} workers)", unit="shard", leave=False)
        while pending or in_flight:
            for depth in range(1, IN_FLIGHT + 1):  # every live actor one shard deep before any gets a second
                for slot, actor in list(self.actors.items()):
                    if pending and sum(1 for s, _ in in_flight.values() if s == slot) < depth:
                        job = pending.popleft()
                        in_flight[actor.run.remote(job, model_dir)] = (slot, job)
            if not in_flight:  # no actor left: the head runs what remains itself
                job = pending.popleft()
                log.warning("ray: no worker left; the head runs shard %d itself", job.index)
                if run_on_head is None:
                    from rsft_gen.backends import make_generator, pick_device

                    head_gen = head_gen or make_generator(
                        self.recipe.generate, model_dir, pick_device(self.recipe.device)
                    )
                    run_on_head = functools.partial(run_shard, head_gen)
                tokens, _ = run_on_head(job)
                stats.tokens, stats.on_head = stats.tokens + tokens, stats.on_head + 1
                bar.update()
                faults.check(job.round, "generate", shard=job.index)
                continue
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            slot, job = in_flight.pop(ref)
            try:
                tokens, _ = ray.get(ref)
            except (
                ray.exceptions.RayActorError
            ) as e:  # the process died (killed, OOM, node lost): only this shard is lost
                if (dead := self.actors.pop(slot, None)) is not None:
                    log.warning(
                        "ray: worker %d died during shard %d (%s); its shards go to the other workers",
                        slot,
                        job.index,
                        type(e).__name__,
                    )
                    ray.kill(dead)  # in case it is only unreachable: it must not come back and write late
                if not job.on_disk():  # it may have died just after writing the shard: then nothing is lost
                    pending.appendleft(job)
                    stats.lost += 1
                else:
                    bar.update()
                continue
            except (
                ray.exceptions.RayTaskError
            ) as e:  # a Python error in the shard (bad checkpoint, ...): as local would
                raise e.cause if isinstance(e.cause, BaseException) else e
            stats.tokens += tokens
            stats.by_worker[slot] = stats.by_worker.get(slot, 0) + 1
            bar.update()
            faults.check(job.round, "generate", shard=job.index)  # tests: the head dies with this shard written
        bar.close()
        if head_gen is not None:
            head_gen.close()
        stats.seconds = time.perf_counter() - start
        if stats.lost:
            log.warning("ray: %d shards were re-run after their worker died", stats.lost)
        log.info("ray: shards per worker %s", dict(sorted(stats.by_worker.items())))
        return stats

    def release(self) -> None:
        """Every actor frees its engine's memory (before training)."""
        ray = _ray()
        refs = [actor.release.remote() for actor in self.actors.values()]
        for ref in refs:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                pass  # a dead actor holds nothing; it is replaced next round

    def close(self) -> None:
        ray = _ray()
        for actor in self.actors.values():
            ray.kill(actor)
        self.actors = {}
        if self.started_ray:
            ray.shutdown()


# --- rewards: executor: ray ------------------------------------------------------------------------------------


@functools.cache
def _chunk_task():
    from rsft_gen.rewards import call_chunk

    return _ray().remote(num_cpus=1)(call_chunk)  # registered once per process, not per call


def chunk_bounds(n: int, size: int, group_ids: list | None = None) -> list[tuple[int, int]]:
    """[start, end) of chunks of about `size` samples, never splitting a prompt's group (majority_vote needs it whole).

    >>> chunk_bounds(7, 2, [0, 0, 0, 1, 1, 2, 2])
    [(0, 3), (3, 5), (5, 7)]
    """
    bounds, a = [], 0
    while a < n:
        b = min(a + size, n)
        while group_ids is not None and 0 < b < n and group_ids[b] == group_ids[b - 1]:
            b += 1  # the candidates of a prompt are contiguous: extend to the end of its group
        bounds.append((a, b))
        a = b
    return bounds


def remote_reward(fn: Callable, spec, chunk_size: int | None = None) -> Callable:
    """`fn` run over the Ray cluster: contiguous chunks of the batch as tasks, values concatenated in order.

    Called by keyword with everything rewards.score offers (per-sample lists, recipe kwargs,
    trainer_state, the log hooks). Each task loads the reward from its spec (so it must be
    importable on every node) and calls it through rewards.call_chunk, which passes only what
    the function takes and records what it logs; the head replays that into its own hooks,
    chunk by chunk, so log_extra columns line up with the samples. A reward with a `workers`
    parameter (code_exec) gets workers=1 per task unless the recipe sets it: Ray already runs
    one task per CPU.
    """
    try:
        one_worker = "workers" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        one_worker = False

    @functools.wraps(fn)
    def wrapper(**args):
        ray = _ray()
        connect()
        hooks = {h: args.pop(h) for h in ("log_extra", "log_metric") if h in args}  # the head's; replayed below
        if one_worker:
            args.setdefault("workers", 1)
        n = len(args["completions"])
        size = chunk_size or max(
            1, -(-n // (4 * max(1, int(ray.cluster_resources().get("CPU", 1)))))
        )  # ~4 chunks per CPU
        # Per-sample arguments (one value per completion) are cut with the chunk; the rest go whole.
        per_sample = {k for k, v in args.items() if isinstance(v, (list, tuple)) and len(v) == n}
        refs = [
            _chunk_task().remote(spec, {k: (v[a:b] if k in per_sample else v) for k, v in args.items()})
            for a, b in chunk_bounds(n, size, args.get("group_ids"))
        ]
        values: list = []
        for ref in refs:
            try:
                chunk, logged = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # the reward's own exception, so its error policy applies as local
                raise e.cause if isinstance(e.cause, BaseException) else e
            values.extend(chunk)
            logged.replay(hooks)
        return values

    return wrapper
