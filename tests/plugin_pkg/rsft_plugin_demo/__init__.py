"""A demo reward plugin for rsft-gen."""


def brevity(prompts, completions, **columns):
    """1 / (1 + words): shorter completions score higher."""
    return [1.0 / (1 + len(c.split())) for c in completions]
