"""The recipe schema: one dataclass per stage, loaded from YAML with key=value overrides.

    from rsft_gen.config import load_recipe
    cfg = load_recipe("recipes/addition_tiny.yaml", ["rounds=2", "generate.n=4"])
    rsft-gen config recipes/addition_tiny.yaml     # every key: type, value, help (rsft_gen/config_help.py)

Every key carries a one-line help in its field metadata (`opt(default, help)`, as
TRL's config classes do), and each section checks itself (`check`, called by
`validate`) next to its fields.

OmegaConf structured configs give us type checking and unknown-key errors for
free; we wrap its messages so they name the file, the key, and a suggestion.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from rsft_gen.accept_rules import RULES, get_rule


class RecipeError(ValueError):
    """A recipe that cannot run; the message says what, where, and what to do."""


Problems = Iterator[tuple[str, str]]  # (key, message) for each problem; validate raises the first


def opt(default: Any = None, help: str = "", factory: Callable[[], Any] | None = None) -> Any:
    """A recipe key: its default and a one-line help (`rsft-gen config` prints both)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TinyModelConfig:
    # A Llama-architecture model small enough to train on two CPU cores in minutes.
    hidden_size: int = opt(128, "tiny model: width of the residual stream")
    num_layers: int = opt(2, "tiny model: transformer layers")
    num_heads: int = opt(4, "tiny model: attention heads")
    intermediate_size: int = opt(256, "tiny model: MLP width")
    max_position_embeddings: int = opt(64, "tiny model: longest sequence (prompt + completion) in tokens")


@dataclass
class ModelConfig:
    path: str = opt(
        "tiny",
        "'tiny' (built in code), a local dir, a hub id, a .gguf file (converted once, cached by hash) "
        "or a packaged model such as smollm2-135m-instruct (rsft_gen/model_source.py)",
    )
    gguf_file: Optional[str] = opt(None, "a GGUF file inside the directory model.path")
    tiny: TinyModelConfig = opt(factory=TinyModelConfig, help="the model built when model.path is 'tiny'")
    dtype: str = opt("auto", "auto: float32 on CPU, bf16 on GPUs that support it")
    chat_template: bool = opt(False, "render prompts with the tokenizer's chat template")
    system_prompt: Optional[str] = opt(None, "chat_template: a system message before each prompt")


@dataclass
class DataConfig:
    task: str = opt("addition", "built-in synthetic task (addition, humaneval, reasoning_gym), or file / hub")
    digits: list[int] = opt(factory=lambda: [1, 2], help="addition: operand lengths in digits")
    train_prompts: int = opt(2000, "prompts sampled from each round")
    eval_prompts: int = opt(500, "held-out prompts evaluated after each round")
    path: Optional[str] = opt(None, "file: .jsonl/.json/.parquet/.csv or a save_to_disk dir; hub: a load_dataset name")
    name: Optional[str] = opt(None, "hub: the data set's config name (e.g. 'main' for gsm8k)")
    data_files: Any = opt(None, "hub: passed to load_dataset (e.g. path: json, data_files: local.jsonl)")
    split: str = opt("train", "the split prompts come from")
    eval_split: Optional[str] = opt(None, "the split eval prompts come from; None: hold out part of `split`")
    prompt_field: str = opt("prompt", "the column holding the prompt")
    answer_field: str = opt("answer", "the column holding the reference answer")
    subsample: Optional[int] = opt(None, "keep this many rows of each split, drawn with the run's seed")
    prompt_template: Optional[str] = opt(
        None, "the prompt as a Python format string over the row's fields, e.g. '{text}\\nTests: {test_list[0]}'"
    )
    answer_pattern: Optional[str] = opt(
        None, "regex; the gold answer becomes its first group, e.g. '####\\s*(.+)' (GSM8K)"
    )
    tasks: list[Any] = opt(
        factory=list, help="reasoning_gym: task names, or {name, weight, config} mixes drawn by weight"
    )
    prompt_suffix: str = opt("", "reasoning_gym: appended to every question, e.g. an instruction on the answer format")

    def check(self) -> Problems:
        if self.task in ("file", "hub") and not self.path:
            yield "data.path", f"is not set; data.task: {self.task} needs a file/directory or a data set name."
        if self.subsample is not None and self.subsample <= 0:
            yield (
                "data.subsample",
                f"is {self.subsample}; give a positive number of rows, or leave it unset to keep all.",
            )
        if self.train_prompts <= 0:
            yield "data.train_prompts", f"is {self.train_prompts}; it must be positive."


@dataclass
class SeedSFTConfig:
    n: int = opt(0, "labelled examples for the round-0 seed SFT; 0 skips it")
    epochs: float = opt(1.0, "epochs of the seed SFT")


@dataclass
class GenerateConfig:
    backend: str = opt("hf", "hf | vllm | auto (vllm if installed) | dataset (the prompt set's reference completions)")
    n: int = opt(8, "candidates per prompt (k)")
    temperature: float = opt(1.0, "sampling temperature; 0 = greedy")
    top_p: float = opt(1.0, "nucleus sampling: keep the smallest token set with this much probability")
    top_k: int = opt(0, "keep the k most likely tokens; 0 = off")
    max_new_tokens: int = opt(8, "longest completion in tokens")
    # On vLLM log q costs throughput: per-token log-probs pass through the engine's Python output path.
    log_q: Optional[bool] = opt(
        None,
        "record log q (the sampled tokens' log-probability under the distribution that "
        "drew them)? None: when the acceptance rule uses it (likelihood_ratio)",
    )
    batch_size: int = opt(256, "prompts per HF generate call")
    # Each shard is written on its own and seeded by its index, so a crash loses at most one shard
    # and a resumed round samples exactly the same candidates.
    shard_prompts: int = opt(1024, "prompts per generation shard (the unit a crash loses and a resume redoes)")
    vllm: dict[str, Any] = opt(factory=dict, help="passed to vllm.LLM(...) untouched, so any engine option works")
    vllm_lifecycle: str = opt(
        "auto",
        "auto | inplace (one engine per run, asleep while training, weights reloaded) | restart (an engine per round)",
    )
    executor: str = opt(
        "local", "where shards are sampled: local | ray (generate.workers Ray actors, the same candidates)"
    )
    workers: int = opt(2, "ray: actors in the pool")
    ray_address: Optional[str] = opt(
        None,
        "ray: 'HEAD_IP:6379' or 'ray://HEAD_IP:10001'; None: RAY_ADDRESS, a cluster on this node, else a local one",
    )
    worker_cpus: float = opt(1.0, "ray: CPUs per actor (its torch threads on CPU)")
    worker_gpus: Optional[float] = opt(
        None, "ray: GPUs per actor; None: vLLM's tensor x pipeline parallel size if the cluster has GPUs, else 0"
    )

    def check(self) -> Problems:
        if self.n <= 0:
            yield "generate.n", f"is {self.n}; it must be a positive number of candidates per prompt."
        if self.temperature < 0:
            yield "generate.temperature", f"is {self.temperature}; it must be >= 0."
        if not 0 < self.top_p <= 1:
            yield "generate.top_p", f"is {self.top_p}; it must be in (0, 1]."
        if self.shard_prompts <= 0:
            yield (
                "generate.shard_prompts",
                (
                    f"is {self.shard_prompts}; it must be a positive number of prompts per "
                    f"generation shard (default 1024)."
                ),
            )
        if self.workers <= 0 or self.worker_cpus < 0 or (self.worker_gpus or 0) < 0:
            yield (
                "generate.workers",
                (
                    f"is {self.workers} (worker_cpus {self.worker_cpus}, worker_gpus {self.worker_gpus}); "
                    f"give 1 or more workers and non-negative CPUs/GPUs per worker."
                ),
            )
        if self.max_new_tokens <= 0:
            yield "generate.max_new_tokens", "must be positive."


@dataclass
class RewardSpec:
    name: str = opt(MISSING, "built-in name, entry point, or 'package.module:function'")
    weight: float = opt(1.0, "weight of this reward in the summed `reward`")
    kwargs: dict[str, Any] = opt(factory=dict, help="keyword arguments passed to the reward")
    on_error: str = opt("raise", "raise | zero | skip: what a reward exception does")
    executor: str = opt("local", "local | ray: score chunks of the candidates as Ray tasks (CPU-heavy rewards)")
    # e.g. trl.rewards:get_soft_overlong_punishment with {max_completion_len: 512, soft_punish_cache: 64}
    factory: bool = opt(
        False, "true: `name` builds the reward: called once with `kwargs`, it returns the reward function"
    )

    def check(self, i: int) -> Problems:
        if self.on_error not in ("raise", "zero", "skip"):
            yield f"rewards[{i}].on_error", f"is '{self.on_error}'; choose raise, zero or skip."
        if self.executor not in ("local", "ray"):
            yield f"rewards[{i}].executor", f"is '{self.executor}'; choose local or ray."


@dataclass
class AcceptConfig:
    rule: str = opt(
        "threshold", "threshold | best_of_n | top_fraction | all | likelihood_ratio (rsft_gen.accept_rules.RULES)"
    )
    threshold: float = opt(1.0, "threshold: accept candidates whose reward is at least this")
    fraction: float = opt(0.25, "top_fraction: the share of candidates accepted")
    scope: str = opt("prompt", "top_fraction: per 'prompt' (RAFT local) or 'global'")
    target: str = opt(
        "reward_tilted",
        "likelihood_ratio: reward_tilted | model | reward_weighted (p_i ∝ r_i, generate.backend: dataset)",
    )
    beta: float = opt(1.0, "likelihood_ratio: temperature of the reward tilt exp(r / beta)")
    r_max: Any = opt(1.0, "likelihood_ratio: the largest reward, a number or 'per_prompt'")
    target_model: Optional[str] = opt(None, "likelihood_ratio, target: model: the model p is")
    log_m: Any = opt(
        "auto",
        "likelihood_ratio: log of the bound M: a number, 'auto' (pilot estimate), or 'per_prompt' "
        "(target: model; a pilot estimate per prompt)",
    )
    pilot_fraction: float = opt(0.1, "likelihood_ratio: share of a round used to estimate M")
    log_m_margin: float = opt(0.0, "likelihood_ratio: added to the pilot estimate of log M")
    samples_per_prompt: Optional[int] = opt(None, "likelihood_ratio: RSO draw-without-replacement until this many")
    on_empty: str = opt("stop", "stop | carry: what to do when a round accepts nothing")

    def check(self) -> Problems:
        if self.beta <= 0:
            yield "accept.beta", f"is {self.beta}; it must be > 0 (small beta approaches best-of-n)."
        if not (self.r_max == "per_prompt" or isinstance(self.r_max, (int, float))):
            yield "accept.r_max", f"is '{self.r_max}'; give a number or 'per_prompt'."
        if not (self.log_m in ("auto", "per_prompt") or isinstance(self.log_m, (int, float))):
            yield (
                "accept.log_m",
                (
                    f"is '{self.log_m}'; give a number (log of the bound M) or 'auto' (a pilot estimate), "
                    f"or 'per_prompt' (one per prompt)."
                ),
            )
        if not 0 < self.pilot_fraction <= 1:
            yield (
                "accept.pilot_fraction",
                (f"is {self.pilot_fraction}; it must be in (0, 1] (the share of a round used to estimate M)."),
            )
        spp = self.samples_per_prompt
        if spp is not None and (spp <= 0 or self.target != "reward_tilted" or self.r_max != "per_prompt"):
            yield (
                "accept.samples_per_prompt",
                (
                    f"is {spp}; RSO's draw-until-k needs a positive number with accept.target: "
                    f"reward_tilted and accept.r_max: per_prompt (or leave it unset)."
                ),
            )
        if not 0 < self.fraction <= 1:
            yield "accept.fraction", f"is {self.fraction}; it must be in (0, 1]."


@dataclass
class SelectConfig:
    dedup: bool = opt(True, "drop repeated (prompt, dedup_key) pairs")
    dedup_key: str = opt("completion", "a candidate column, or 'answer' for the extracted answer (eval.answer)")
    max_per_prompt: Optional[int] = opt(None, "keep at most this many accepted samples per prompt")
    difficulty_filter: bool = opt(False, "drop prompts whose candidates all pass or all fail (eval.correct)")
    mix_seed_fraction: float = opt(0.0, "share of seed data mixed into each round's SFT set")


@dataclass
class TrainConfig:
    epochs: float = opt(1.0, "passes over the round's SFT set")
    learning_rate: float = opt(1e-3, "peak learning rate")
    batch_size: int = opt(64, "examples per device per step")
    gradient_accumulation_steps: int = opt(1, "steps whose gradients are summed before an update")
    warmup_ratio: float = opt(0.0, "share of the steps spent warming the learning rate up")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    lr_scheduler_type: str = opt("constant", "a transformers scheduler name (constant, linear, cosine, ...)")
    init: str = opt("previous", "previous (train on from the last round's model) | base (from the starting model)")
    precision: str = opt("auto", "auto | fp32 | bf16 | fp16; auto: fp32 on CPU, bf16 on GPUs that support it")
    gradient_checkpointing: Optional[bool] = opt(None, "None: on for GPU, off for CPU")
    max_length: int = opt(64, "longest prompt + completion in tokens; longer examples are truncated")
    logging_steps: int = opt(10, "steps between trainer log lines")
    # Adapters are merged into the saved checkpoint, so generation (vLLM too) always loads a full model.
    peft: dict[str, Any] = opt(
        factory=dict, help="LoRA: passed to peft.LoraConfig(task_type='CAUSAL_LM', **peft); empty = full fine-tuning"
    )
    freeze: list[str] = opt(factory=list, help="parameter-name regexes (re.search) kept frozen")
    num_processes: int = opt(1, "> 1: the train phase runs as `accelerate launch` child processes (all machines)")
    num_machines: int = opt(1, "> 1: accelerate launch on that many Ray nodes (generate.ray_address's cluster)")
    accelerate_config: Optional[str] = opt(None, "e.g. configs/accelerate/deepspeed_zero2.yaml; None: plain DDP")

    def check(self) -> Problems:
        if self.batch_size <= 0 or self.epochs <= 0:
            yield "train.batch_size / train.epochs", "must be positive."
        if self.num_processes <= 0:
            yield (
                "train.num_processes",
                f"is {self.num_processes}; it must be 1 (in-process) or more (accelerate launch).",
            )
        if self.num_machines <= 0 or self.num_processes % max(self.num_machines, 1):
            yield (
                "train.num_machines",
                f"is {self.num_machines} with train.num_processes {self.num_processes}; it must be 1 or more and "
                "divide train.num_processes (the processes of all machines together, the same number on each).",
            )
        if self.accelerate_config and not Path(self.accelerate_config).is_file():
            yield (
                "train.accelerate_config",
                (f"is '{self.accelerate_config}', which does not exist; use one of configs/accelerate/*.yaml."),
            )
        if self.peft and self.freeze:
            yield (
                "train.freeze",
                "is set together with train.peft; LoRA already freezes the base model, use one or the other.",
            )


@dataclass
class CorrectConfig:
    # What "correct" means for eval accuracy, pass@k, maj@k and select.difficulty_filter (rsft_gen/answers.py).
    reward: Optional[str] = opt(
        None, "the reward that decides (a name in `rewards`, 'name#2' for its second entry; None: the first reward)"
    )
    threshold: float = opt(1.0, "a sample is correct when that reward is >= this")


@dataclass
class AnswerConfig:
    # What "the answer" of a completion is, for maj@k and select.dedup_key: answer (rsft_gen/answers.py).
    extract: str = opt(
        "auto",
        "strip | last_number | boxed | gsm8k | answer_tags | last_line | regex (with pattern) "
        "| none (no maj@k) | auto: the first answer-extracting reward's extraction, else none",
    )
    pattern: Optional[str] = opt(None, "extract: regex; the last match's first group (else the whole match)")


@dataclass
class EvalConfig:
    n: int = opt(1, "samples per prompt for pass@k / maj@k (1: greedy only)")
    k: list[int] = opt(factory=lambda: [1], help="the k of pass@k and maj@k, each in 1..eval.n")
    temperature: float = opt(1.0, "sampling temperature of the eval.n samples")
    batch_size: int = opt(512, "prompts per eval generate call")
    backend: Optional[str] = opt(
        None,
        "hf | vllm | auto: what samples the round's model in eval; None: generate.backend, "
        "or hf when that is dataset (reference completions are not the model's)",
    )
    correct: CorrectConfig = opt(factory=CorrectConfig, help="what 'correct' means")
    answer: AnswerConfig = opt(factory=AnswerConfig, help="what 'the answer' of a completion is")

    def check(self) -> Problems:
        if self.n <= 0 or any(k <= 0 or k > self.n for k in self.k):
            yield "eval.k", f"is {list(self.k)}; each k must be in 1..eval.n ({self.n})."
        if self.backend not in (None, "hf", "vllm", "auto"):
            yield (
                "eval.backend",
                (
                    f"is '{self.backend}'; choose hf, vllm or auto (or leave it unset: generate.backend, "
                    f"hf for dataset)."
                ),
            )


@dataclass
class WandbConfig:
    mode: Optional[str] = opt(None, "online | offline | disabled; None: online if a key is set")
    project: str = opt("rsft-gen", "W&B project")
    entity: Optional[str] = opt(None, "W&B entity (user or team)")
    table_rows: int = opt(200, "rows of each round's samples table")


@dataclass
class TrackingConfig:
    wandb: WandbConfig = opt(factory=WandbConfig, help="Weights & Biases")


@dataclass
class Recipe:
    name: str = opt("run", "the run's name")
    output_dir: str = opt("runs/${name}", "the run directory (resumed if it exists)")
    seed: int = opt(0, "the one seed every random choice derives from (rsft_gen/seeds.py)")
    rounds: int = opt(3, "self-training rounds after round 0")
    device: str = opt("auto", "auto | cpu | cuda")
    model: ModelConfig = opt(factory=ModelConfig, help="the starting model")
    data: DataConfig = opt(factory=DataConfig, help="the prompt sets")
    seed_sft: SeedSFTConfig = opt(factory=SeedSFTConfig, help="round 0's SFT on labelled data")
    generate: GenerateConfig = opt(factory=GenerateConfig, help="sampling the candidates")
    rewards: list[RewardSpec] = opt(
        factory=lambda: [RewardSpec(name="exact_match")], help="the rewards, summed by weight"
    )
    accept: AcceptConfig = opt(factory=AcceptConfig, help="which scored candidates are accepted")
    select: SelectConfig = opt(factory=SelectConfig, help="from the accepted candidates to the SFT set")
    train: TrainConfig = opt(factory=TrainConfig, help="the SFT of each round")
    eval: EvalConfig = opt(factory=EvalConfig, help="evaluation after each round")
    tracking: TrackingConfig = opt(factory=TrackingConfig, help="experiment tracking")

    def check(self) -> Problems:
        """The top-level keys, then each section's own checks."""
        if self.seed < 0:
            yield "seed", f"is {self.seed}; it must be 0 or more."
        if self.rounds < 0:
            yield "rounds", f"is {self.rounds}; it must be 0 or more."
        yield from self.generate.check()
        yield from self.accept.check()
        rule = get_rule(self.accept.rule)
        if rule.needs_log_q(self.accept) and self.generate.log_q is False:
            yield (
                "generate.log_q",
                (
                    f"is false, but accept.rule: {rule.name} needs log q; remove the key (it then follows "
                    f"the rule) or set it true."
                ),
            )
        yield from rule.check(self)  # the rule's own checks (accept_rules/<rule>.py)
        if not self.rewards:
            yield "rewards", "is empty; name at least one reward, e.g. rewards=[{name: exact_match}]."
        for i, spec in enumerate(self.rewards):
            yield from spec.check(i)
        yield from self.train.check()
        yield from self.data.check()
        yield from self.eval.check()


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
        close = [
            k
            for k in known
            if k.rsplit(".", 1)[-1]
            in difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1] for k in known], n=1, cutoff=0.6)
        ][:1]
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
            raise RecipeError(
                f"recipe file '{path}' does not exist; pass a path to a YAML recipe such as recipes/addition_tiny.yaml."
            )
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
    """Checks that types alone cannot express; each message names the key. The checks live next to
    their dataclass (`check` methods); here the choices, then those, then eval.correct / eval.answer."""

    def bad(key: str, msg: str):
        raise RecipeError(f"recipe key '{key}' {msg}")

    for key, options in CHOICES.items():
        value = OmegaConf.select(OmegaConf.structured(r), key)
        if value not in options:
            bad(key, f"is '{value}'; choose one of {', '.join(options)}.")
    for key, msg in r.check():
        bad(key, msg)
    from rsft_gen.answers import check  # what "correct" and "the answer" mean; imports this module

    for key, msg in check(r):
        bad(key, msg)


def to_yaml(r: Recipe) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(r))


def to_dict(r: Recipe) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(r), resolve=True)
