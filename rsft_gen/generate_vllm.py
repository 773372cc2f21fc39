"""The vLLM backend: n samples per prompt from one engine, with exact log q.

    gen = VLLMGenerator("runs/x/round_01/model", engine_kwargs={"max_model_len": 512})
    cands = gen.generate([0], ["12+34="], SamplingSettings(n=4, temperature=0.7, top_p=0.9))
    gen.close()

Scripts that build one need an `if __name__ == "__main__":` guard: the engine
runs in child processes that are spawned, and so re-import the main module.

log q: the engine runs with `logprobs_mode="processed_logprobs"`, so the
log-prob vLLM returns for each sampled token is taken after temperature, top-k
and top-p, i.e. under the distribution that drew it; a completion's log q is
their sum (`cumulative_logprob`). It matches `rsft_gen.likelihood` within ~1e-6
at float32 (tests/test_vllm.py), as both apply the same top-p rule (drop the
tokens whose ascending cumulative probability is <= 1 - p). They are asked for
only when the settings want log q (generate.log_q): on small models, passing
per-token log-probs through the engine's output path costs up to a fifth of its
throughput, and the samples are the same without them.

Seeds: every prompt gets its own `SamplingParams(seed=...)` derived from
(settings.seed, prompt_id), so a prompt's candidates do not depend on which
other requests share its batch, nor on request timing. The CPU build crashes on
per-request seeds once a prefill is chunked ("CPU Generator does not use
offset"), so on CPU the engine runs with chunked prefill off.

Lifecycle across rounds (`generate.vllm_lifecycle`): "inplace" keeps one engine
per run, puts it to sleep before training and reloads each round's weights into
it (`reload`); "restart" starts a fresh engine per model, whose processes
exit on `close()` before training. "auto" picks inplace where vLLM has sleep
mode (CUDA, ROCm, XPU) and restart on CPU, where sleep is a no-op and a sleeping
engine would keep its weights and KV cache while the trainer runs.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from rsft_gen.config import RecipeError
from rsft_gen.generate import Candidate, Generator, SamplingSettings

log = logging.getLogger(__name__)

# Engine options on the CPU build; any of them can be overridden through
# generate.vllm in the recipe (passed to vllm.LLM untouched).
CPU_ENGINE_DEFAULTS = {
    "enforce_eager": True,  # no torch.compile: halves engine start, same speed for small models
    "dtype": "float32",
    "kv_cache_memory_bytes": 1 << 30,  # 1 GiB of KV cache; explicit size also skips the warm-up pass
    "gpu_memory_utilization": 0.1,  # a share of RAM on CPU; only used when kv_cache_memory_bytes is unset
    "enable_chunked_prefill": False,  # per-request seeds crash the CPU sampler on chunked prefills
}
ENGINE_DEFAULTS = {"seed": 0}


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def cpu_environment() -> dict[str, str]:
    """OpenMP threads bound to every core this process may use, none reserved.

    vLLM's default reserves a core for the front end; on a 2-core machine that
    halves generation speed.
    """
    cores = sorted(os.sched_getaffinity(0))
    contiguous = cores == list(range(cores[0], cores[-1] + 1))
    bind = f"{cores[0]}-{cores[-1]}" if contiguous else ",".join(map(str, cores))
    return {"VLLM_CPU_OMP_THREADS_BIND": bind, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def engine_options(model_dir: str, engine_kwargs: dict, cpu: bool) -> dict:
    """Our defaults under the recipe's generate.vllm options; the recipe wins."""
    user = dict(engine_kwargs)
    if user.get("logprobs_mode", "processed_logprobs") != "processed_logprobs":
        raise RecipeError(
            f"recipe key 'generate.vllm.logprobs_mode' is '{user['logprobs_mode']}'; the vLLM backend needs "
            "'processed_logprobs' (log q under the distribution that drew each token). Remove the key."
        )
    defaults = dict(ENGINE_DEFAULTS)
    if cpu:
        defaults.update(CPU_ENGINE_DEFAULTS)
        if "gpu_memory_utilization" in user:
            defaults.pop("kv_cache_memory_bytes")  # the recipe sized memory as a share of RAM: honour it
        if user.get("enable_chunked_prefill"):
            log.warning("generate.vllm.enable_chunked_prefill=true on CPU: per-request seeds may crash the engine")
    return {**defaults, **user, "model": model_dir, "logprobs_mode": "processed_logprobs"}


def prompt_seed(seed: int, prompt_id: int) -> int:
    """A per-prompt seed; vLLM gives the n samples of a prompt seed, seed+1, ..."""
    return int(np.random.SeedSequence([seed, prompt_id]).generate_state(1)[0])


class VLLMGenerator(Generator):
    """A fresh engine per model ("restart" lifecycle): `close()` ends its processes."""

    def __init__(self, model_dir: str, engine_kwargs: dict | None = None):
        self.cpu = on_cpu()
        if self.cpu:
            for key, value in cpu_environment().items():
                os.environ.setdefault(key, value)  # read by the engine processes at start
        from vllm import LLM

        self.options = engine_options(model_dir, engine_kwargs or {}, self.cpu)
        start = time.perf_counter()
        self.llm = LLM(**self.options)
        self.start_seconds = time.perf_counter() - start
        log.info("vLLM engine for %s started in %.1fs", model_dir, self.start_seconds)

    def generate(
        self, prompt_ids: list[int], prompts: list[str], settings: SamplingSettings, progress: bool = True
    ) -> list[Candidate]:
        from vllm import SamplingParams

        greedy = settings.temperature == 0
        start = time.perf_counter()
        # detokenize=False: one batched decode at the end costs less than vLLM's per-token
        # incremental detokenizer (and its decoding of every logprob entry).
        if greedy:  # vLLM refuses n > 1 at temperature 0; the n samples would be identical anyway
            params = SamplingParams(n=1, temperature=0.0, max_tokens=settings.max_new_tokens, detokenize=False)
        else:
            base = dict(
                n=settings.n,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=settings.top_k or 0,  # 0 = off, as in our settings
                max_tokens=settings.max_new_tokens,
                detokenize=False,
            )
            if settings.log_q:  # only the sampled token's log-prob (processed: under q); we use their sum
                base.update(logprobs=0, flat_logprobs=True)
            params = [SamplingParams(**base, seed=prompt_seed(settings.seed, int(pid))) for pid in prompt_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=progress)
        rows = []
        for pid, request in zip(prompt_ids, outputs):
            samples = request.outputs * settings.n if greedy else sorted(request.outputs, key=lambda c: c.index)
            rows += [(int(pid), i, c) for i, c in enumerate(samples)]
        tokenizer = self.llm.get_tokenizer()
        text_ids = []  # the completion's text leaves out the final EOS, as in the HF backend
        for _, _, c in rows:
            ids = list(c.token_ids)
            text_ids.append(ids[:-1] if c.finish_reason == "stop" and ids[-1:] == [tokenizer.eos_token_id] else ids)
        texts = tokenizer.batch_decode(text_ids, skip_special_tokens=True)
        out: list[Candidate] = []
        for (pid, i, c), text in zip(rows, texts):
            ids = list(c.token_ids)  # ends with EOS when finish_reason == "stop", as in the HF backend
            out.append(
                Candidate(
                    prompt_id=pid,
                    sample_index=i,
                    completion=text,
                    token_ids=ids,
                    num_tokens=len(ids),
                    log_q=0.0
                    if greedy
                    else float(c.cumulative_logprob)
                    if settings.log_q
                    else float("nan"),  # greedy: a point mass drew it
                    finish_reason=c.finish_reason or "length",
                )
            )
        seconds = time.perf_counter() - start
        tokens = sum(c.num_tokens for c in out)
        log.info(
            "vLLM generated %d samples (%d tokens) in %.1fs, %.0f tokens/s",
            len(out),
            tokens,
            seconds,
            tokens / max(seconds, 1e-9),
        )
        return out

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            start = time.perf_counter()
            llm.llm_engine.engine_core.shutdown()  # engine core and worker processes exit, their memory with them
            log.info("vLLM engine shut down in %.1fs", time.perf_counter() - start)


def _retie_cpu_lm_head(worker) -> bool:
    """After an in-place reload on CPU: a tied lm_head keeps the packed GEMM copy of
    the old embeddings (its own weights are not in the checkpoint), so re-pack it."""
    model = worker.model_runner.model
    head, inner = getattr(model, "lm_head", None), getattr(model, "model", None)
    embed = getattr(inner, "embed_tokens", None)
    if head is None or embed is None or not getattr(model.config, "tie_word_embeddings", False):
        return False
    head.weight = embed.weight
    head.quant_method.process_weights_after_loading(head)
    return True


class ReloadingVLLMGenerator(VLLMGenerator):
    """One engine per run ("inplace" lifecycle): sleeps while training, reloads weights in place.

    `reloads` tells backends.GeneratorCache to call `reload(model_dir)` instead of building a
    new generator, and `sleep()` where it would otherwise close one.
    """

    reloads = True

    def __init__(self, model_dir: str, engine_kwargs: dict | None = None):
        engine_kwargs = dict(engine_kwargs or {})
        if not on_cpu():
            engine_kwargs.setdefault("enable_sleep_mode", True)
        else:
            os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # to send _retie_cpu_lm_head to the worker
        super().__init__(model_dir, engine_kwargs)
        self.model_dir = model_dir
        self.asleep = False

    def sleep(self) -> None:
        if self.llm is not None and not self.asleep and not self.cpu:  # sleep is a no-op on CPU
            self.llm.sleep(level=2)  # drop weights and KV cache: the next model's weights are loaded anyway
            self.asleep = True

    def reload(self, model_dir: str) -> None:
        start = time.perf_counter()
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": model_dir})
        if self.cpu:
            self.llm.collective_rpc(_retie_cpu_lm_head)
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.reset_prefix_cache()  # cached KV blocks belong to the old weights
        self.model_dir = model_dir
        log.info("vLLM engine reloaded weights from %s in %.1fs", model_dir, time.perf_counter() - start)

    def generate(self, prompt_ids, prompts, settings, progress: bool = True) -> list[Candidate]:
        self.wake()
        return super().generate(prompt_ids, prompts, settings, progress)

    def wake(self) -> None:
        if self.asleep:  # woken for the same model: level-2 sleep dropped its weights
            self.reload(self.model_dir)


def make_vllm_generator(model_dir: str, engine_kwargs: dict, lifecycle: str = "auto") -> VLLMGenerator:
    if lifecycle == "auto":
        from vllm.platforms import current_platform

        lifecycle = "inplace" if current_platform.is_sleep_mode_available() else "restart"
    log.info("vLLM engine lifecycle: %s", lifecycle)
    cls = ReloadingVLLMGenerator if lifecycle == "inplace" else VLLMGenerator
    return cls(model_dir, engine_kwargs)
