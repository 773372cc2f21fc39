"""Built-in reward functions, one small module each.

Every reward has the TRL reward-function contract:
`fn(prompts: list[str], completions: list[str], **columns) -> list[float | None]`.
The registry below maps recipe names to "module:function"; `rsft-gen rewards`
lists them with the entry points of installed packages.
"""

BUILTIN = {
    "exact_match": "reward.exact_match:exact_match",
    "math": "reward.math_equiv:math_equiv",
    "format": "reward.format:format_reward",
    "length": "reward.length:length",
    "span_f1": "reward.span_f1:span_f1",
    "majority_vote": "reward.majority_vote:majority_vote",
    "reward_model": "reward.reward_model:reward_model",
    "code_exec": "reward.code_exec:code_exec",
    "model_loss": "reward.model_loss:model_loss",
    "reasoning_gym": "reward.reasoning_gym:reasoning_gym",
}
