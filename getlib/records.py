"""A student's evaluation, kept as a committed record: results/<profile>/runs/<student>.json.

A run's weights live in work/<profile>/ (git-ignored), which a study spanning sessions does not
keep. Its record does: every evaluation row of that student (comparison, iterations, decoding,
fixed_point, training) beside two identities that say what the rows are a function of:
- `run`: the settings the profile gives the run (those its checkpoint was checked to hold by
  `runs.resume_problems`), its pair set's manifest sha256, the training code's fingerprint, the
  number of processes, and the machine (`getlib.machine`: torch's build, the instruction set of each CPU
  kernel library, or the GPU). That
  is the machine that evaluates the run, which is the one that trained it: a run folder lives in
  work/, which no session or machine shares, and `runs.reuse_problems` copies runs only within one;
- `evaluation`: the evaluate params, the feature network's files (sha256), the fingerprint of
  the scoring code (getlib.evaluate's import closure), the sha256 of the two files that put the rows
  together (getlib/stages/evaluate.py, this file) and the machine.
A record stands for its run only while both identities equal those the profile gives now; any
difference (a setting, the pairs, the features, the code) makes it stale, and `record_problems` says
which. One exception: a code change that benchmarks/code_equivalence.py found to make the same bytes
and rows is listed in results/code_equivalence.json, and a record made by the earlier code counts
as made by the later. The machine is kept but not compared: training is deterministic on one machine
(and thread count), not across machines, so a run made elsewhere on the same pairs and features is
one more draw of the run-to-run variation, like its training seed (`claims.arm_rows` lists an
arm's machines).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from getlib.config import Params, device_of
from getlib.io import atomic_write_json, file_sha256, read_json
from getlib.machine import machine
from getlib.provenance import PACKAGE, code_fingerprint
from getlib.runs import OUTPUT_NEUTRAL, jsonable, run_provenance, run_settings

__all__ = ["TABLES", "EQUIVALENCES", "as_current_code", "run_identity", "evaluation_identity", "record_path", "write_record", "read_record",
           "record_problems", "made_here", "score_differences"]

TABLES = ("comparison", "iterations", "decoding", "fixed_point", "training")
# Row fields measured with a clock on this machine: a record's scores are compared without them.
TIMED = {"images_per_s", "peak_mib"}
# The glue that turns scores into rows (outside getlib.evaluate's closure): a record holds its sha256.
ROWS_CODE = ("stages/evaluate.py", "records.py")
# Code changes shown to leave runs and rows unchanged (benchmarks/code_equivalence.py writes it).
EQUIVALENCES = PACKAGE.parent / "results" / "code_equivalence.json"


def run_identity(p: Params, key: str) -> dict:
    """What student `key`'s weights are a function of, as the profile gives it now."""
    cfg = p.train_config(key)
    return jsonable({"settings": {**run_settings(cfg), "world_size": p.nproc(key)}, **run_provenance(cfg),
                   "device": machine(device_of(cfg.device))})


def evaluation_identity(p: Params) -> dict:
    """What an evaluation row is a function of besides the run: evaluate params, features, code."""
    features = p.work("features")
    return jsonable({"evaluate": {k: v for k, v in dataclasses.asdict(p.evaluate).items() if k != "device"},
                   "features": {f.name: file_sha256(f) for f in sorted(features.glob("*"))
                                if f.suffix in (".npy", ".pt")},
                   "code": code_fingerprint("getlib.evaluate"),
                   "rows_code": {name: file_sha256(PACKAGE / name) for name in ROWS_CODE},
                   "device": machine(device_of(p.evaluate.device))})


def record_path(p: Params, key: str) -> Path:
    return p.results("runs", f"{key}.json")


def write_record(p: Params, key: str, rows: dict[str, list[dict]], evaluation: dict | None = None) -> None:
    """`evaluation`: evaluation_identity(p), when the caller has it already (it hashes the feature net)."""
    atomic_write_json(record_path(p, key), {"student": key, "run": run_identity(p, key),
                                            "evaluation": evaluation or evaluation_identity(p),
                                            "rows": {name: rows.get(name, []) for name in TABLES}})


def read_record(p: Params, key: str) -> dict | None:
    """The committed record of student `key`, or None when there is none."""
    path = record_path(p, key)
    if not path.is_file():
        return None
    record = read_json(path)
    if not isinstance(record, dict) or not {"student", "run", "evaluation", "rows"} <= set(record):
        raise ValueError(f"{path}: not a run record (needs student, run, evaluation and rows)")
    if record["student"] != key:
        raise ValueError(f"{path}: the record of student {record['student']!r}, not of {key!r}")
    return record


def _differences(recorded: dict, now: dict, where: str) -> list[str]:
    keys = sorted(set(recorded) | set(now))
    return [f"{where}.{k}: recorded {recorded.get(k)!r}, now {now.get(k)!r}" for k in keys
            if recorded.get(k) != now.get(k)]


def as_current_code(record: dict) -> dict:
    """`record` with its code identities carried forward through results/code_equivalence.json: an
    identity that an equivalence's earlier code had becomes its later code's (in the file's order)."""
    run, evaluation = dict(record["run"]), dict(record["evaluation"])
    evaluation["rows_code"] = dict(evaluation.get("rows_code", {}))
    for step in (read_json(EQUIVALENCES) if EQUIVALENCES.is_file() else []):   # a step names what it showed
        if "train_code" in step and run.get("code") == step["train_code"][0]:
            run["code"] = step["train_code"][1]
        if "evaluate_code" in step and evaluation.get("code") == step["evaluate_code"][0]:
            evaluation["code"] = step["evaluate_code"][1]
        for name, (before, after) in step.get("rows_code", {}).items():
            if evaluation["rows_code"].get(name) == before:
                evaluation["rows_code"][name] = after
    return {**record, "run": run, "evaluation": evaluation}


def record_problems(p: Params, key: str, record: dict, evaluation: dict | None = None) -> list[str]:
    """Why `record` does not stand for student `key` of this profile now; [] when it does.
    `evaluation`: evaluation_identity(p), when the caller has it already."""
    record = as_current_code(record)
    run = record["run"]
    try:
        now = run_identity(p, key)
    except FileNotFoundError as e:   # the pair set is not here: nothing to compare the record with
        return [f"{e.filename} is not here: make the pair set (its stage) to check this record"]
    shaping = lambda settings: {k: v for k, v in settings.items() if k not in OUTPUT_NEUTRAL}  # noqa: E731
    problems = _differences(shaping(run.get("settings", {})), shaping(now["settings"]), "settings")
    compared = lambda identity, skip: {k: v for k, v in identity.items() if k not in skip}  # noqa: E731
    problems += _differences(compared(run, ("settings", "device")), compared(now, ("settings", "device")), "run")
    problems += _differences(compared(record["evaluation"], ("device",)),
                             compared(evaluation or evaluation_identity(p), ("device",)), "evaluation")
    return problems


def made_here(record: dict) -> bool:
    """Whether this machine made `record` (then evaluating its run again must give its rows)."""
    return record["run"].get("device") == machine(device_of(record["run"]["settings"].get("device", "cpu")))


def score_differences(recorded: dict[str, list[dict]], now: dict[str, list[dict]]) -> list[str]:
    """Where two evaluations of the same run disagree, clock-measured fields left out: a
    deterministic run and evaluation give the same rows, so any difference is a reproducibility
    failure to look into."""
    problems = []
    for name in TABLES:
        a, b = recorded.get(name, []), now.get(name, [])
        if len(a) != len(b):
            problems.append(f"{name}: {len(a)} recorded rows, {len(b)} now")
            continue
        for i, (x, y) in enumerate(zip(a, b)):
            x, y = ({k: v for k, v in jsonable(r).items() if k not in TIMED} for r in (x, y))
            if x != y:
                diff = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
                problems.append(f"{name} row {i}: " + ", ".join(f"{k} {x.get(k)!r} -> {y.get(k)!r}" for k in diff))
    return problems
