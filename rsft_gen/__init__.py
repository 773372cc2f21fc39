"""rsft-gen: generative self-training for language models.

Sample k candidates per prompt, score them with pluggable rewards, accept by
rule (threshold, best-of-n, top-fraction, exact likelihood-ratio rejection
sampling with bound M), fine-tune with TRL on what was accepted, repeat.
"""

__version__ = "0.1.0"
