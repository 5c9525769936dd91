"""Stage distill@student: train one student on its condition's pairs, work/<profile>/students/<key>/.

A second worker can train other students of the same profile outside DVC, through this same function:

    python -m getlib.stages.distill profiles/claims.yaml get-paper-lr1e3-s0 [more students]

`dvc repro` later finds those runs finished (same settings, pairs and code) and keeps them.

A student that differs from another student of the profile only in a larger max_steps (under the
constant schedule) starts from that student's finished run: its first steps are that run, bit for
bit on the same machine (resume is exact), so a study can train its best arms longer without
repeating their first part."""
from __future__ import annotations

import dataclasses
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from getlib.config import Params
from getlib.io import atomic_copytree, atomic_write_csv, atomic_write_json, remove_owned
from getlib.stages.launch import torchrun
from getlib.train import (TrainConfig, cli_args, resumable_changes, resume_problems, reuse_problems, run_summary,
                          train, training_log)


@contextmanager
def training_lock(lock: Path):
    """One trainer per run folder (DVC and a second worker may reach the same student): a lock file
    beside the run, created exclusively and holding the trainer's pid. A lock whose process has gone
    is taken over; a live one is refused by name."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            pid = int(lock.read_text().strip() or 0)
            try:
                os.kill(pid, 0)
            except (ProcessLookupError, ValueError):
                lock.unlink(missing_ok=True)   # its trainer is gone
                continue
            raise RuntimeError(f"{lock}: process {pid} is training this run; wait for it or stop it") from None
    else:
        raise RuntimeError(f"{lock}: could not take the lock")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


def distill(p: Params, key: str) -> dict:
    """Train student `key`; copy its log (with the wall-clock columns) into results/<profile>/train/.

    DVC keeps the run folder between runs (persist) so that an interrupted run resumes from its
    checkpoint. It is resumed (a finished one reused) only when `train.resume_problems` finds
    nothing: same settings, pair set, training code, and an intact checkpoint. Otherwise the folder
    is replaced and the reason printed to stderr, as is all this stage finds in work/ (a log: the
    rendered notebook leaves it out; a finished run is also in DVC's cache). With `reuse`, a
    finished run of that profile is copied in when `train.reuse_problems` finds it identical."""
    with training_lock(p.work("students", f".{key}.lock")):
        return _distill(p, key)


def _distill(p: Params, key: str) -> dict:
    cfg = p.train_config(key)
    out = Path(cfg.out)
    nproc = p.nproc(key)
    problems = resume_problems(cfg, nproc)
    if problems:
        print(f"{out}: starting anew: {'; '.join(problems)}", file=sys.stderr, flush=True)
        remove_owned(out, p.work("students"))
    source = p.reused("students", key)
    if source is not None and source.exists() and not (out.exists() and any(out.iterdir())):
        why_not = reuse_problems(cfg, source, nproc)
        if why_not:
            print(f"{out}: not reusing {source}: {'; '.join(why_not)}", file=sys.stderr, flush=True)
        else:
            print(f"{out}: copying the identical finished run {source}", file=sys.stderr, flush=True)
            remove_owned(out, p.work("students"))
            atomic_copytree(source, out)
    if not (out.exists() and any(out.iterdir())):
        _continue_shorter_run(p, key, nproc)
    if run_is_finished(cfg, nproc):   # not re-entered: its record, and so its results, stay as they are
        summary = run_summary(out)
    elif nproc > 1:
        torchrun(nproc, "getlib.train", cli_args(cfg))
        summary = run_summary(out)
    else:
        summary = train(cfg)
    atomic_write_csv(training_log(out), p.results("train", f"{key}.csv"))
    atomic_write_json(p.results("train", f"{key}.json"), {k: v for k, v in summary.items() if k != "config"})
    return summary


def run_is_finished(cfg: TrainConfig, nproc: int = 1) -> bool:
    """Whether cfg.out holds the finished run `cfg` describes: student.pt written, all max_steps
    done, and nothing `train.resume_problems` objects to (settings, pairs, code, files)."""
    out = Path(cfg.out)   # (student.pt is written before run.json: a run killed between the two resumes)
    return ((out / "student.pt").is_file() and (out / "run.json").is_file() and not resume_problems(cfg, nproc)
            and run_summary(out)["steps"] == cfg.max_steps)


def _continue_shorter_run(p: Params, key: str, nproc: int) -> None:
    """Copy into student `key`'s empty folder the finished run it continues: that of the profile's
    student with the most steps whose settings are `key`'s but for a smaller max_steps. Training then
    resumes it from its last checkpoint and, on the same machine and thread count, ends bit for bit
    where a run from scratch ends. Not under a cosine schedule (it depends on max_steps), and only a
    run that stopped on a step where the longer one also logs, samples and snapshots (a run does all
    three at its last step). When such a twin exists but cannot be continued, this says why, and the
    run trains from scratch."""
    cfg = p.train_config(key)
    if "max_steps" not in resumable_changes(cfg):
        return
    others = {other: p.train_config(other) for other in p.students if other != key}
    twins = sorted(((c.max_steps, other) for other, c in others.items() if c.max_steps < cfg.max_steps
                    and dataclasses.replace(c, max_steps=cfg.max_steps, out=cfg.out) == cfg), reverse=True)
    grid = [cfg.log_every, cfg.sample_every] + ([cfg.snapshot_every] if cfg.snapshot_every else [])
    why_not = []
    for shorter, other in twins:
        if any(shorter % every for every in grid):
            why_not.append(f"{other} ends at step {shorter}, between the steps that log, sample or snapshot")
            continue
        source = p.work("students", other)
        try:
            with training_lock(p.work("students", f".{other}.lock")):   # (not while it trains)
                problems = _continuation_problems(cfg, source, shorter, nproc)
                if not problems:
                    print(f"{cfg.out}: continuing {other}'s finished {shorter}-step run to {cfg.max_steps} steps",
                          file=sys.stderr, flush=True)
                    remove_owned(cfg.out, p.work("students"))
                    atomic_copytree(source, cfg.out)
                    return
                why_not.append(f"{other}: {'; '.join(problems)}")
        except RuntimeError as e:   # its trainer holds the lock
            why_not.append(str(e))
    if why_not:
        print(f"{cfg.out}: training from scratch, no shorter run to continue: {' | '.join(why_not)}",
              file=sys.stderr, flush=True)


def _continuation_problems(cfg: TrainConfig, source: Path, shorter: int, nproc: int) -> list[str]:
    """Why the run in `source` is not the first `shorter` steps of the run `cfg` makes; [] when it is."""
    try:
        problems = reuse_problems(dataclasses.replace(cfg, max_steps=shorter), source, nproc)
        if not problems and run_summary(source)["steps"] != shorter:
            problems = [f"{source} stopped before its {shorter} steps"]
    except (OSError, ValueError, KeyError) as e:   # (e.g. caught between writing its last two files)
        problems = [f"{source}: unreadable ({e})"]
    return problems


def main(argv: list[str] | None = None) -> None:
    import argparse

    from getlib.config import load_params, project_root
    parser = argparse.ArgumentParser(description="Train students of a profile through the distill stage.")
    parser.add_argument("params", help="params.yaml or a profile file")
    parser.add_argument("students", nargs="+", help="keys of students in that file")
    args = parser.parse_args(argv)
    p = load_params(args.params, root=project_root())
    for key in args.students:
        summary = distill(p, key)
        print(f"{key}: {summary['steps']} steps", flush=True)


if __name__ == "__main__":
    main()
