"""`rsft-gen config`: every recipe key with its type, value and one-line help.

    rsft-gen config                                    # the defaults
    rsft-gen config recipes/addition_tiny.yaml rounds=2  # a recipe's values (changed keys show their default)

The help is each field's metadata["help"] in rsft_gen/config.py, so a new key is
documented where it is declared.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, Iterator

from rsft_gen.config import CHOICES, Recipe


def key_rows(value: Any, default: Any, prefix: str = "") -> Iterator[tuple[str, str, Any, Any, str]]:
    """(key, type, value, default, help) for every leaf key of a recipe (or of one section)."""
    for f in fields(value):
        key, v = prefix + f.name, getattr(value, f.name)
        d = getattr(default, f.name, None) if default is not None else None
        help_text = f.metadata.get("help", "")
        if key in CHOICES and "|" not in help_text:
            help_text = f"{help_text} ({' | '.join(map(str, CHOICES[key]))})".strip()
        if is_dataclass(v):
            yield from key_rows(v, d, key + ".")
        elif isinstance(v, list) and v and all(is_dataclass(x) for x in v):  # rewards: one block per entry
            yield key, str(f.type), f"{len(v)} entries", f"{len(d or [])} entries", help_text
            for i, item in enumerate(v):
                yield from key_rows(item, type(item)(), f"{key}[{i}].")
        else:
            yield key, str(f.type), v, d, help_text


def format_keys(recipe: Recipe) -> str:
    rows = list(key_rows(recipe, Recipe()))
    width_key = max(len(r[0]) for r in rows)
    width_type = max(len(r[1]) for r in rows)
    lines = []
    for key, type_name, value, default, help_text in rows:
        shown = repr(value) if value == default else f"{value!r} (default {default!r})"
        lines.append(f"{key:<{width_key}}  {type_name:<{width_type}}  {shown}")
        if help_text:
            lines.append(f"{'':<{width_key}}  {'':<{width_type}}  # {help_text}")
    return "\n".join(lines)
