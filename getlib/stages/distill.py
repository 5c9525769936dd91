"""Stage distill@student: train one student on its condition's pairs, work/<profile>/students/<key>/."""
from __future__ import annotations

from pathlib import Path

from getlib.config import Params
from getlib.io import atomic_copytree, atomic_write_csv, atomic_write_json, remove_owned
from getlib.stages.launch import torchrun
from getlib.train import cli_args, resume_problems, reuse_problems, run_summary, train, training_log


def distill(p: Params, key: str) -> dict:
    """Train student `key`; copy its log (with the wall-clock columns) into results/<profile>/train/.

    DVC keeps the run folder between runs (persist) so that an interrupted run resumes from its
    checkpoint. It is resumed (a finished one reused) only when `train.resume_problems` finds
    nothing: same settings, pair set, training code, and an intact checkpoint. Otherwise the folder
    is replaced and the reason printed (a finished run is also in DVC's cache). With `reuse`, a
    finished run of that profile is copied in when `train.reuse_problems` finds it identical."""
    cfg = p.train_config(key)
    out = Path(cfg.out)
    nproc = p.nproc(key)
    problems = resume_problems(cfg, nproc)
    if problems:
        print(f"{out}: starting anew: {'; '.join(problems)}", flush=True)
        remove_owned(out, p.work("students"))
    source = p.reused("students", key)
    if source is not None and not (out.exists() and any(out.iterdir())):
        why_not = reuse_problems(cfg, source, nproc)
        if why_not:
            print(f"{out}: not reusing {source}: {'; '.join(why_not)}", flush=True)
        else:
            print(f"{out}: copying the identical finished run {source}", flush=True)
            remove_owned(out, p.work("students"))
            atomic_copytree(source, out)
    if nproc > 1:
        torchrun(nproc, "getlib.train", cli_args(cfg))
        summary = run_summary(out)
    else:
        summary = train(cfg)
    atomic_write_csv(training_log(out), p.results("train", f"{key}.csv"))
    atomic_write_json(p.results("train", f"{key}.json"), {k: v for k, v in summary.items() if k != "config"})
    return summary
