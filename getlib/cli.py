"""Settings dataclasses on the command line: one flag per field, written and read the same way.

`as_flags(settings)` gives the flags that `read_flags` turns back into the same dataclass, so a
stage that launches `torchrun -m getlib.train` or `-m getlib.pairs` passes every setting without
listing any by hand. Values are YAML (flow style), so nested values keep their types
(`--deq "{b_tol: 1e-6}"`), and the dataclass validates them as it does a params.yaml section.
"""
from __future__ import annotations

import argparse
import dataclasses

import yaml

__all__ = ["as_flags", "add_flags", "read_flags"]


def _flag_value(value: object) -> str:
    return yaml.safe_dump(list(value) if isinstance(value, tuple) else value,
                          default_flow_style=True).removesuffix("\n...\n").strip()


def as_flags(settings: object, prefix: str = "") -> list[str]:
    """Every field of the dataclass instance `settings` as `--<prefix><field> <YAML value>`."""
    return [a for f in dataclasses.fields(settings) for a in (f"--{prefix}{f.name}", _flag_value(getattr(settings, f.name)))]


def add_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """A flag per field of dataclass `cls`, absent from the parsed namespace unless given; required
    where the field has no default."""
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        required = default is dataclasses.MISSING
        parser.add_argument(f"--{prefix}{f.name}", dest=f"{prefix}{f.name}", type=yaml.safe_load, required=required,
                            default=argparse.SUPPRESS, help="(required)" if required else f"(default: {default!r})")


def read_flags(args: dict, cls: type, prefix: str = "") -> dict:
    """The settings given in `args` (a parsed namespace as a dict) whose names start with `prefix`,
    without it; those that are fields of `cls` typed as the fields declare (others are kept for
    `cls` to refuse by name): paths and names stay strings whatever YAML makes of them, and YAML 1.1's reading of
    2e-3 as a string is undone for floats (a value that is not a number is left for `cls` to name)."""
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    settings = {}
    for name, value in args.items():
        key = name.removeprefix(prefix)
        if not name.startswith(prefix):
            continue
        if types.get(key) == "str":
            value = str(value)
        elif "float" in types.get(key, "") and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        settings[key] = value
    return settings
