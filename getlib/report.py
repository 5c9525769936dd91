"""The reproduction report: this machine's numbers beside the committed ones, each with its tolerance.

After `dvc repro`, the working tree's results/<profile>/ holds what this machine computed and git
(HEAD, or the revision given with --against) holds the project's numbers.

    python -m getlib.report [--profile NAME] [--against REV] [--markdown FILE]

prints a Markdown table, one line per number: this machine's, the committed one, the tolerance the
comparison used and the verdict (`identical`: equal to the last bit, so the machine reproduced the
bytes; `within`; `OUTSIDE`; `new`: only here; `missing`: committed but not here, e.g. the stage has
not run; `not re-made`: its file is the committed one byte for byte, clock fields included, so this
machine did not make it: pulled, or its stage did not run). The numbers are the computed ones
only: each source's FID, the feature network's held-out accuracy, each teacher's final training loss. Clock-measured fields (seconds, images per second,
memory) depend on the machine's load, not on the computation, and are left out. A generated
source's FID moves with the evaluation's sampling seeds, so it passes within 2 sd of the committed
seed ranges; a number without such a spread passes within a fixed margin (RULES lists them all).

Exit status: 0 when no number lies OUTSIDE its tolerance, 1 when one does, 2 when there is nothing
to compare (no such profile at the revision, no such revision, no number re-made here) or a file
cannot be read.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from getlib.config import load_params, project_root
from getlib.io import atomic_write
from getlib.machine import machine

__all__ = ["Rule", "RULES", "ReportError", "compare", "summary", "render", "committed_files", "working_files", "main"]


@dataclass(frozen=True)
class Rule:
    text: str                                   # as the report's tolerance column names it
    margin: Callable[[float, float], float]     # (committed value, committed spread) -> largest |difference| that passes


RULES = {
    "seeds": Rule("2 sd of the committed seed ranges", lambda value, sd: 2 * sd),
    "relative": Rule("5% of the committed value", lambda value, sd: 0.05 * abs(value)),
    "points": Rule("1 percentage point", lambda value, sd: 0.01),
}


class ReportError(ValueError):
    """Nothing to compare, or a file that cannot be read: the message names it."""


@dataclass(frozen=True)
class Number:
    value: float
    spread: float       # the committed seed ranges' sample std (0: none)
    rule: str           # a key of RULES
    file: str = ""      # the results/<profile>/ file it was read from


def _number(record: Any, key: str, where: str) -> float:
    value = record.get(key) if isinstance(record, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def _fids(table: Any, name: str, where: str) -> dict[str, Number]:
    if not isinstance(table, list):
        raise ReportError(f"{where} must hold a list of rows, got {type(table).__name__}")
    numbers = {}
    for i, row in enumerate(table):
        if not isinstance(row, dict):
            raise ReportError(f"{where} row {i} must be a mapping, got {row!r}")
        source, condition = row.get("source"), row.get("condition", "-")
        here = f"{where} row {i} ({source})"
        # a teacher's source names its condition already: "teacher (uncond)"
        label = f"FID {source}" + ("" if condition == "-" or str(source).endswith(f"({condition})") else f" ({condition})")
        if label in numbers:
            raise ReportError(f"{here}: a second row for source {source!r}, condition {condition!r}")
        spread = row.get("fid_std")
        has_spread = isinstance(spread, (int, float)) and math.isfinite(spread) and spread > 0
        numbers[label] = Number(_number(row, "fid", here), spread if has_spread else 0.0,
                                "seeds" if has_spread else "relative")
    return numbers


def _accuracy(record: Any, name: str, where: str) -> dict[str, Number]:
    return {"feature network held-out accuracy": Number(_number(record, "held_out_accuracy", where), 0.0, "points")}


def _teacher_loss(record: Any, name: str, where: str) -> dict[str, Number]:
    condition = name.removeprefix("teacher-").removesuffix(".json")
    return {f"teacher ({condition}) final loss": Number(_number(record, "final_loss", where), 0.0, "relative")}


# the compared files (paths inside results/<profile>/), in the report's order, and the function that
# reads each one's numbers: (parsed JSON, path, the path as errors name it) -> {label: Number}
FILES = {r"features\.json": _accuracy, r"teacher-[^/]+\.json": _teacher_loss, r"evaluation/comparison\.json": _fids}


def _compared(name: str) -> bool:
    return any(re.fullmatch(pattern, name) for pattern in FILES)


def _numbers(files: dict[str, bytes | str], side: str) -> dict[str, Number]:
    numbers: dict[str, Number] = {}
    for pattern, extract in FILES.items():
        for name in sorted(n for n in files if re.fullmatch(pattern, n)):
            where = f"{name} ({side})"
            try:
                record = json.loads(files[name])
            except ValueError as e:   # invalid JSON or UTF-8
                raise ReportError(f"{where} is not valid JSON: {e}") from e
            numbers.update({label: replace(n, file=name) for label, n in extract(record, name, where).items()})
    return numbers


def _row(label: str, here: Number | None, committed: Number | None, unchanged: set[str] = frozenset()) -> dict:
    row = {"metric": label, "here": None if here is None else here.value,
           "committed": None if committed is None else committed.value}
    if committed is None:
        return {**row, "rule": None, "tolerance": "-", "verdict": "new"}
    rule = RULES[committed.rule]
    margin = rule.margin(committed.value, committed.spread)
    if here is None:
        verdict = "missing"
    elif here.file in unchanged:
        verdict = "not re-made"
    elif here.value.hex() == committed.value.hex():
        verdict = "identical"
    else:   # NaN on either side fails the comparison: OUTSIDE
        verdict = "within" if abs(here.value - committed.value) <= margin else "OUTSIDE"
    return {**row, "rule": committed.rule, "tolerance": f"{rule.text} (±{margin:.3g})", "verdict": verdict}


def compare(committed: dict[str, bytes | str], here: dict[str, bytes | str]) -> list[dict]:
    """The report's rows, one per number, from two sets of results/<profile>/ files (path inside it ->
    contents): the committed numbers in order, then those found only here. Other files are ignored."""
    old, new = _numbers(committed, "committed"), _numbers(here, "this machine")
    as_bytes = lambda text: text.encode() if isinstance(text, str) else text  # noqa: E731
    unchanged = {name for name in committed if name in here and as_bytes(here[name]) == as_bytes(committed[name])}
    return ([_row(label, new.get(label), number, unchanged) for label, number in old.items()]
            + [_row(label, number, None) for label, number in new.items() if label not in old])


def _cell(value: float | None) -> str:
    # repr: the shortest text that reads back as the same float, so different numbers never print alike
    return "-" if value is None else repr(value)


def summary(rows: list[dict]) -> str:
    compared = [r for r in rows if r["verdict"] in ("identical", "within", "OUTSIDE")]
    of = lambda verdict: [r["metric"] for r in rows if r["verdict"] == verdict]  # noqa: E731
    passed = len(compared) - len(of("OUTSIDE"))
    text = (f"{passed} of {len(compared)} numbers within tolerance ({len(of('identical'))} identical to the last digit); "
            f"OUTSIDE: {', '.join(of('OUTSIDE')) or 'none'}")
    return text + "".join(f"; {verdict}: {', '.join(of(verdict))}" for verdict in ("missing", "new", "not re-made")
                          if of(verdict))


def render(rows: list[dict], heading: str) -> str:
    """`heading`, the Markdown table of `rows` and the summary line."""
    lines = [heading, "", "| metric | this machine | committed | tolerance | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {r['metric']} | {_cell(r['here'])} | {_cell(r['committed'])} | {r['tolerance']} | {r['verdict']} |"
              for r in rows]
    return "\n".join([*lines, "", summary(rows)]) + "\n"


# ------------------------------------------------------------------------------------------------
# The two sides: git at a revision, and the working tree
# ------------------------------------------------------------------------------------------------

def _git(root: Path, *args: str) -> bytes:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True)
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise ReportError(f"git {' '.join(args)} failed in {root}: {said[0] if said else f'exit status {done.returncode}'}")
    return done.stdout


def committed_files(root: Path, rev: str, profile: str) -> dict[str, bytes]:
    """The compared files of results/<profile>/ at `rev`; an error listing the profiles there when it has none."""
    # paths relative to `root` (ls-tree's default, and "rev:./path"), should the project lie inside a larger repository
    paths = _git(root, "ls-tree", "-r", "-z", "--name-only", rev, "--", "results/").decode().split("\0")
    profiles: dict[str, list[str]] = {}
    for parts in (p.split("/", 2) for p in paths if p):
        if len(parts) == 3 and _compared(parts[2]):
            profiles.setdefault(parts[1], []).append(parts[2])
    if profile not in profiles:
        raise ReportError(f"profile {profile!r}: no results/{profile}/ with numbers to compare at {rev}; "
                          f"profiles there: {', '.join(sorted(profiles)) or 'none'}")
    return {name: _git(root, "show", f"{rev}:./results/{profile}/{name}") for name in profiles[profile]}


def working_files(root: Path, profile: str) -> dict[str, bytes]:
    """The compared files of results/<profile>/ in the working tree."""
    folder = root / "results" / profile
    names = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return {name: (folder / name).read_bytes() for name in names if _compared(name)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help="the results/<profile>/ to compare (default: params.yaml's profile)")
    parser.add_argument("--against", default="HEAD", metavar="REV", help="the git revision of the committed numbers")
    parser.add_argument("--markdown", metavar="FILE", help="also write the report to FILE")
    args = parser.parse_args(argv)
    try:
        root = project_root()
        profile = args.profile or load_params(root / "params.yaml").profile
        commit = _git(root, "rev-parse", "--short", "--verify", f"{args.against}^{{commit}}").decode().strip()
        rows = compare(committed_files(root, args.against, profile), working_files(root, profile))
    except (ValueError, FileNotFoundError) as e:   # (ReportError, and config's ParamsError)
        print(f"getlib.report: {e}", file=sys.stderr)
        return 2
    report = render(rows, f"results/{profile}/ of this machine ({machine(torch.device('cpu'))}) against "
                          f"the committed one at {args.against} ({commit})")
    print(report, end="")
    if args.markdown:
        atomic_write(args.markdown, lambda f: f.write(report.encode()))
    if not any(r["verdict"] in ("identical", "within", "OUTSIDE") for r in rows):
        print(f"getlib.report: no number of results/{profile}/ was re-made here (run `make repro` first)", file=sys.stderr)
        return 2
    return 1 if any(r["verdict"] == "OUTSIDE" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
