"""Stage distill@student: train one student on its condition's pairs, work/<profile>/students/<key>/.

A second worker can train other students of the same profile outside DVC, through this same function:

    python -m getlib.stages.distill profiles/claims.yaml get-paper-lr1e3-s0 [more students]

`dvc repro` later finds those runs finished (same settings, pairs and code) and keeps them. After
`dvc pull`, `python -m getlib.stages.distill params.yaml --adopt-pulled` (make pull runs it) lets the
stage keep the pulled runs too (`adopt_pulled`).

A student that differs from another student of the profile only in a larger max_steps (under the
constant schedule) starts from that student's finished run: its first steps are that run, bit for
bit on the same machine (resume is exact), so a study can train its best arms longer without
repeating their first part."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from getlib.config import Params
from getlib.io import atomic_write_csv, atomic_write_json
from getlib.notebook import publishing
from getlib.runs import (continuation_problems, continues, resume_problems, reuse_problems, run_is_finished,
                         run_summary, training_log)
from getlib.stages.folders import adopt, adopt_reused, clear_unless_resumable, is_empty, log
from getlib.stages.launch import torchrun
from getlib.train import cli_args, train


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
    """Train student `key`; publish its log and summary into results/<profile>/train/ and their
    wall-clock fields into results/<profile>/timing/ (nothing when a notebook runs it by hand).

    DVC keeps the run folder between runs (persist) so that an interrupted run resumes from its
    checkpoint. It is resumed (a finished one kept as it is) only when `runs.resume_problems` finds
    nothing: same settings, pair set, training code, and an intact checkpoint; otherwise it is
    replaced (`stages.folders`, which also says so on stderr; a finished run is also in DVC's
    cache). With `reuse`, a finished run of that profile is copied in when `runs.reuse_problems`
    finds it identical."""
    with training_lock(p.work("students", f".{key}.lock")):
        return _distill(p, key)


def _distill(p: Params, key: str) -> dict:
    cfg = p.train_config(key)
    out = Path(cfg.out)
    nproc = p.nproc(key)
    owner = p.work("students")
    clear_unless_resumable(out, owner, resume_problems(cfg, nproc), "starting anew")
    adopt_reused(out, owner, p.reused("students", key), "finished run", lambda source: reuse_problems(cfg, source, nproc))
    if is_empty(out):
        _continue_shorter_run(p, key, nproc)
    if run_is_finished(cfg, nproc):   # not re-entered: its record, and so its results, stay as they are
        summary = run_summary(out)
    elif nproc > 1:
        torchrun(nproc, "getlib.train", cli_args(cfg))
        summary = run_summary(out)
    else:
        summary = train(cfg)
    if publishing():   # train/: the log and summary, no wall-clock field (figures reads them); timing/: those
        log, clock = training_log(out), ("images_per_s", "seconds")   # (clock: timing.csv's columns)
        atomic_write_csv([{k: v for k, v in r.items() if k not in clock} for r in log],
                         p.results("train", f"{key}.csv"))
        atomic_write_json(p.results("train", f"{key}.json"),
                          {k: v for k, v in summary.items() if k not in ("config", "seconds")})
        atomic_write_csv([{"step": r["step"], **{k: r.get(k) for k in clock}} for r in log],
                         p.results("timing", f"{key}.csv"))
        atomic_write_json(p.results("timing", f"{key}.json"), {"student": key, "seconds": summary["seconds"]})
    return summary


def _continue_shorter_run(p: Params, key: str, nproc: int) -> None:
    """Copy into student `key`'s empty folder the finished run it continues: that of the profile's
    student with the most steps that `runs.continues` into `key`. Training then resumes it from its
    last checkpoint and, on the same machine and thread count, ends bit for bit where a run from
    scratch ends. When such a twin exists but cannot be continued (`runs.continuation_problems`, or
    its trainer holds its lock), this says why, and the run trains from scratch."""
    cfg = p.train_config(key)
    twins = sorted(((c.max_steps, other) for other in p.students if other != key
                    and continues(cfg, c := p.train_config(other))), reverse=True)
    why_not = []
    for shorter, other in twins:
        source = p.work("students", other)
        try:
            with training_lock(p.work("students", f".{other}.lock")):   # (not while it trains)
                problems = adopt(Path(cfg.out), p.work("students"), source,
                                 lambda source: continuation_problems(cfg, source, shorter, nproc))
        except RuntimeError as e:   # its trainer holds the lock
            problems = [str(e)]
        if not problems:
            log(Path(cfg.out), f"continuing {other}'s finished {shorter}-step run to {cfg.max_steps} steps")
            return
        why_not.append(f"{other}: {'; '.join(problems)}")
    if why_not:
        log(Path(cfg.out), f"training from scratch, no shorter run to continue: {' | '.join(why_not)}")


def adopt_pulled(p: Params) -> list[str]:
    """Give the runs `dvc pull` restored their provenance record, so that this stage (and its
    notebook, run by hand) keeps them instead of training them again; returns the students adopted.

    The record is not part of the artifact (.dvcignore: it holds the training's wall-clock time), so
    a restored folder has none, and without one a run's pairs and code are unknown. DVC knows them:
    a run is adopted only where DVC finds its stage up to date (the folder has the hash dvc.lock
    records, made from these params, this code and this pair set), and its record says what the
    training would have written, the seconds unknown (None)."""
    from dvc.repo import Repo

    from getlib.io import file_sha256
    from getlib.provenance import read_record, write_record
    from getlib.runs import checkpoint_path, run_provenance
    adopted = []
    with Repo(str(p.root)) as repo:
        for key in p.students:
            cfg = p.train_config(key)
            out = Path(cfg.out)
            if read_record(out) is not None or not (out / "student.pt").is_file() or repo.status([f"distill@{key}"]):
                continue
            write_record(out, {**run_provenance(cfg), "checkpoint_sha256": file_sha256(checkpoint_path(out)),
                               "seconds": None})
            adopted.append(key)
    return adopted


def main(argv: list[str] | None = None) -> None:
    import argparse

    from getlib.config import load_params, project_root
    parser = argparse.ArgumentParser(description="Train students of a profile through the distill stage.")
    parser.add_argument("params", help="params.yaml or a profile file")
    parser.add_argument("students", nargs="*", help="keys of students in that file")
    parser.add_argument("--adopt-pulled", action="store_true",
                        help="instead: give the pulled runs DVC finds current their provenance record")
    args = parser.parse_args(argv)
    if bool(args.students) == args.adopt_pulled:
        parser.error("name students to train, or --adopt-pulled alone")
    p = load_params(args.params, root=project_root())
    if args.adopt_pulled:
        print(f"pulled runs kept as finished: {', '.join(adopt_pulled(p)) or 'none'}", flush=True)
    for key in args.students:
        summary = distill(p, key)
        print(f"{key}: {summary['steps']} steps", flush=True)


if __name__ == "__main__":
    main()
