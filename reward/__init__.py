"""Built-in reward functions, one small module each.

Every reward has the TRL reward-function contract:
`fn(prompts: list[str], completions: list[str], **columns) -> list[float | None]`.
The registry below maps recipe names to "module:function"; `rsft-gen rewards`
lists them with the entry points of installed packages.
"""

BUILTIN = {
    "exact_match": "reward.exact_match:exact_match",
}
