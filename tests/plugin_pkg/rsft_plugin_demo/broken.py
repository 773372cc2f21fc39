"""A plugin whose import fails, as a missing dependency would."""

import a_module_that_does_not_exist  # noqa: F401


def reward(prompts, completions, **columns):
    return [0.0] * len(completions)
