"""A training run's folder and its bookkeeping, apart from the loop that fills it (`getlib.train`).

A run folder holds files that are a pure function of the pair set, the settings and the code
(`run.json`, `student.pt`, `metrics.csv`, `samples.csv`, `samples/`, `snapshots/`,
`checkpoints/latest.pt`) and two that say how it was made: the wall-clock log `timing.csv` and the
provenance record `.provenance.json` (the pair set's manifest sha256, the training code's
fingerprint, the checkpoint's sha256 and the seconds trained), both listed in `.dvcignore`.

This module answers, from those files alone, whether a folder can be resumed with given settings
(`resume_problems`), whether another profile's finished run is the one the settings would make
(`reuse_problems`), whether a shorter run is the first part of a longer one (`continues`,
`continuation_problems`) and whether a run is finished (`run_is_finished`); it keeps the record up
to date as checkpoints are written (`RunRecord`) and repairs the appended logs on a restart.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
from pathlib import Path

import torch
from torch import nn

from getlib.devices import resolve_device
from getlib.io import atomic_torch_save, atomic_write_csv, file_sha256, first_line
from getlib.models import GET
from getlib.pairs import MANIFEST
from getlib.provenance import RECORD, code_fingerprint, read_record, write_record
from getlib.settings import GET_CONFIGS, VIT_CONFIGS, DEQConfig, TrainConfig, recipe_of

__all__ = ["RESUMABLE_CHANGES", "OUTPUT_NEUTRAL", "CHECKPOINT_KEYS", "TIMING", "LOGS", "checkpoint_path",
           "load_checkpoint", "resumable_changes", "run_settings", "run_recipe", "run_provenance", "jsonable", "resume_problems",
           "reuse_problems", "continues", "continuation_problems", "run_is_finished", "run_summary", "training_log",
           "RunRecord", "seconds_trained", "Logs", "repair_log"]

# Settings a resumed run may change; any other difference from the checkpoint is refused.
RESUMABLE_CHANGES = {"max_steps", "time_budget_s", "log_every", "ckpt_every", "sample_every", "snapshot_every",
                     "num_samples", "num_workers", "device", "progress", "out"}
# Resumable settings that do not change what a finished run holds (the others, e.g. snapshot_every, do).
OUTPUT_NEUTRAL = {"time_budget_s", "num_workers", "device", "progress", "out"}
CHECKPOINT_KEYS = {"step", "images_seen", "config", "recent_losses", "model", "ema", "opt"}
# Wall-clock per logged step: beside metrics.csv, listed in .dvcignore (a run folder's files are a
# pure function of its pairs, settings and code; timings are not, so they are kept apart).
TIMING = "timing.csv"
LOGS = ("metrics.csv", "samples.csv", TIMING)   # appended a row at a time


def checkpoint_path(out: str | Path) -> Path:
    return Path(out) / "checkpoints" / "latest.pt"


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint written by `getlib.train`, or an error naming the file."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # truncated, not a torch file, or holding objects weights_only refuses
        raise ValueError(f"{path}: not a readable training checkpoint ({type(e).__name__}: {first_line(e)})") from e
    missing = sorted(CHECKPOINT_KEYS - set(saved)) if isinstance(saved, dict) else ["(not a dict)"]
    if missing or not isinstance(saved["config"], dict):
        raise ValueError(f"{path}: not a training checkpoint written by getlib.train (lacks {missing or ['config']})")
    return _interned_keys(saved)


def _interned_keys(obj: object) -> object:
    """`obj` with every str key of its dicts interned, as the literal keys of a fresh run are. Pickle
    memoizes by identity, so without this a resumed run's optimizer state (its keys read back from
    the file) would make its next checkpoint other bytes than an uninterrupted run's, same values."""
    if isinstance(obj, dict):
        out = type(obj)((sys.intern(k) if isinstance(k, str) else k, _interned_keys(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):   # a state_dict's module versions
            out._metadata = obj._metadata
        return out
    if isinstance(obj, list):
        return [_interned_keys(v) for v in obj]
    return obj


def resumable_changes(cfg: TrainConfig) -> set[str]:
    """Settings a run resumed with `cfg` may change (a cosine schedule is tied to its max_steps)."""
    return RESUMABLE_CHANGES - ({"max_steps"} if cfg.lr_schedule == "cosine" else set())


def jsonable(v: object) -> object:
    """`v` as it reads back from JSON (tuples become lists), so that saved and current settings compare."""
    return json.loads(json.dumps(v))


def run_settings(cfg: TrainConfig) -> dict:
    """The run's settings as its files record them: without the pair set's and the run's paths (the
    pair set is identified by its manifest's sha256 in the run record), so that the files do not
    depend on where the project lies."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("pairs", "out")}
    # the resolved architecture and DEQ recipe too: a run's code fingerprint leaves settings.py out
    # (it holds declarations whose values each record keeps), so a changed default still shows here
    get = cfg.model in GET_CONFIGS
    return {**settings, "architecture": {**GET_CONFIGS, **VIT_CONFIGS}.get(cfg.model),
            "deq_resolved": dataclasses.asdict(DEQConfig.from_dict(cfg.deq)) if get else None}


def run_recipe(model: nn.Module, cfg: TrainConfig) -> dict:
    """Which gradient recipe the run used (its run.json and results say it)."""
    if not isinstance(model, GET):
        return {"kind": "single output", "loss": cfg.loss}
    d = model.deq_cfg
    return {"kind": "DEQ", "name": recipe_of(d), "loss": cfg.loss, "gamma": cfg.gamma, "no_grad_iterations": d.f_max_iter,
            "grad": d.grad, "grad_steps": d.grad_steps, "tau": d.tau, "sup_gap": d.sup_gap,
            "memory_efficient": d.memory_efficient}


def run_provenance(cfg: TrainConfig) -> dict:
    """What a run's weights depend on beyond its settings: its pair set and the training code."""
    return {"pairs_manifest_sha256": file_sha256(Path(cfg.pairs) / MANIFEST), "code": code_fingerprint("getlib.train")}


def resume_problems(cfg: TrainConfig, world: int = 1) -> list[str]:
    """Why the run folder `cfg.out` cannot be resumed (or, finished, reused) with `cfg` on `world`
    processes; [] when it can, or when it holds nothing. A run is resumed only when its settings
    (all but `resumable_changes`), its pair set's manifest, the training code (getlib.train's import
    closure) and its checkpoint's recorded sha256 all agree."""
    out = Path(cfg.out)
    ckpt = checkpoint_path(out)
    if not out.is_dir() or not any(p.name != RECORD for p in out.iterdir()):
        return []
    if not ckpt.is_file():
        return [f"{out} holds files but no checkpoint ({ckpt.relative_to(out)})"]
    record = read_record(out)
    if record is None:
        return [f"{out} has no provenance record ({RECORD}): the pair set and code that made it are unknown"]
    now = run_provenance(cfg)
    problems = []
    if record.get("pairs_manifest_sha256") != now["pairs_manifest_sha256"]:
        problems.append(f"its pair set changed ({Path(cfg.pairs) / MANIFEST} is not the one it was trained on)")
    if record.get("code") != now["code"]:
        problems.append("the training code changed (getlib.train or a module it imports)")
    if file_sha256(ckpt) not in (record.get("checkpoint_sha256"), record.get("checkpoint_sha256_next")):
        problems.append(f"{ckpt}: sha256 does not match the one recorded when it was written")
    if problems:
        return problems
    try:
        saved = load_checkpoint(ckpt)["config"]
    except ValueError as e:
        return [str(e)]
    now = {**run_settings(cfg), "world_size": world}
    return [f"setting {k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in now
            if k not in resumable_changes(cfg) and jsonable(saved.get(k)) != jsonable(now[k])]


def reuse_problems(cfg: TrainConfig, source: str | Path, world: int = 1) -> list[str]:
    """Why the finished run in `source` (another profile's) is not the run `cfg` would make; [] when
    it is: finished, with the same pair set, code, intact checkpoint and every setting that shapes
    its files. Training being deterministic, a copy of it is then the run `cfg` makes."""
    source = Path(source)
    if not (source / "student.pt").is_file():
        return [f"{source} holds no finished run"]
    problems = resume_problems(dataclasses.replace(cfg, out=str(source)), world)
    if problems:
        return problems
    saved = load_checkpoint(checkpoint_path(source))["config"]
    now = run_settings(cfg)
    problems = [f"setting {k}: {source} has {saved.get(k)!r}, now {now[k]!r}" for k in sorted(resumable_changes(cfg))
                if k in now and k not in OUTPUT_NEUTRAL and jsonable(saved.get(k)) != jsonable(now[k])]
    ran_on, here = torch.device(run_summary(source)["device"]).type, resolve_device(cfg.device).type
    if ran_on != here:   # bf16 autocast on CUDA, float32 on the CPU: not the same numbers
        problems.append(f"{source} ran on {ran_on}, this run would run on {here}")
    return problems


def continues(cfg: TrainConfig, shorter: TrainConfig) -> bool:
    """Whether the run `shorter` is the first part of the run `cfg`: the same settings but a smaller
    max_steps, under a schedule that does not depend on max_steps (resume is exact, so training it on
    ends where `cfg` trained from scratch ends, on the same machine and thread count)."""
    return ("max_steps" in resumable_changes(cfg) and shorter.max_steps < cfg.max_steps
            and dataclasses.replace(shorter, max_steps=cfg.max_steps, out=cfg.out) == cfg)


def continuation_problems(cfg: TrainConfig, source: Path, shorter: int, world: int = 1) -> list[str]:
    """Why the run in `source` cannot be continued into the run `cfg` makes; [] when it can: it is
    that run's first `shorter` steps, finished, and it stopped on a step where `cfg` logs, samples
    and snapshots (a run does all three at its last step; else the longer run would hold extra files)."""
    grid = [cfg.log_every, cfg.sample_every] + ([cfg.snapshot_every] if cfg.snapshot_every else [])
    if any(shorter % every for every in grid):
        return [f"it ends at step {shorter}, between the steps that log, sample or snapshot"]
    try:
        problems = reuse_problems(dataclasses.replace(cfg, max_steps=shorter), source, world)
        if not problems and run_summary(source)["steps"] != shorter:
            problems = [f"{source} stopped before its {shorter} steps"]
    except (OSError, ValueError, KeyError) as e:   # (e.g. caught between writing its last two files)
        problems = [f"{source}: unreadable ({e})"]
    return problems


def run_is_finished(cfg: TrainConfig, world: int = 1) -> bool:
    """Whether cfg.out holds the finished run `cfg` describes: student.pt written, all max_steps
    done, and nothing `resume_problems` objects to (settings, pairs, code, files)."""
    out = Path(cfg.out)   # (student.pt is written before run.json: a run killed between the two resumes)
    return ((out / "student.pt").is_file() and (out / "run.json").is_file() and not resume_problems(cfg, world)
            and run_summary(out)["steps"] == cfg.max_steps)


def run_summary(out: str | Path) -> dict:
    """A finished run's summary: out/run.json and the wall-clock seconds from its run record."""
    out = Path(out)
    return {**json.loads((out / "run.json").read_text()), "seconds": (read_record(out) or {}).get("seconds")}


def training_log(out: str | Path) -> list[dict]:
    """The run's logged rows (metrics.csv) with their wall-clock columns (timing.csv) joined by step."""
    out = Path(out)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    timing = {}
    if (out / TIMING).exists():
        with open(out / TIMING, newline="") as f:
            timing = {r["step"]: r for r in csv.DictReader(f)}
    return [{**r, **{k: v for k, v in timing.get(r["step"], {}).items() if k != "step"}} for r in rows]


class RunRecord:
    """The run's provenance record, kept current by rank 0: started with the pair set and code (or,
    resuming, read back), then each checkpoint's sha256 and the seconds trained so far."""

    def __init__(self, cfg: TrainConfig, resumed: bool):
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.data = read_record(self.out) if resumed else {**run_provenance(cfg), "checkpoint_sha256": None}
        write_record(self.out, self.data)

    def save_checkpoint(self, checkpoint: dict, seconds: float) -> None:
        """Write checkpoints/latest.pt atomically. Its sha256 is announced in the record before the
        file is renamed into place, so a kill between the two leaves the run resumable."""
        def announce(tmp: Path) -> None:
            self.data["checkpoint_sha256_next"] = file_sha256(tmp)
            write_record(self.out, self.data)
        atomic_torch_save(checkpoint, checkpoint_path(self.out), announce)
        self.data.update(checkpoint_sha256=self.data.pop("checkpoint_sha256_next"), seconds=seconds)
        write_record(self.out, self.data)

    def finish(self, seconds: float) -> None:
        self.data["seconds"] = seconds
        write_record(self.out, self.data)


def seconds_trained(out: str | Path) -> float:
    """The wall-clock seconds a resumed run had trained before (from its record)."""
    return (read_record(out) or {}).get("seconds", 0.0)


class Logs:
    """The run's CSV logs, appended a row at a time; `repair_log` mends a torn last line on restart."""

    def __init__(self, out: Path, step: int):
        self.out, self.files, self.writers = out, {}, {}
        for name in LOGS:
            repair_log(out / name, step)

    def write(self, name: str, row: dict) -> None:
        if name not in self.files:
            self.files[name] = f = open(self.out / name, "a", newline="")
            self.writers[name] = csv.DictWriter(f, fieldnames=list(row))
            if f.tell() == 0:
                self.writers[name].writeheader()
        self.writers[name].writerow(row)
        self.files[name].flush()

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def repair_log(path: Path, step: int) -> None:
    """On (re)start, drop logged rows past the checkpoint's step (they will be logged again) and
    repair what a kill mid-append can leave: a last line without its newline, a short row."""
    if not path.exists():
        return
    text = path.read_bytes().decode("utf-8", errors="replace")
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]   # a torn last line
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    header = text.splitlines()[0].split(",") if text else []
    if not header or header[0] != "step":
        path.unlink()   # not even a whole header: the log starts again
        return
    kept = [r for r in rows if None not in r and None not in r.values() and _int(r["step"]) is not None
            and _int(r["step"]) <= step]
    atomic_write_csv(kept, path, header)


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
