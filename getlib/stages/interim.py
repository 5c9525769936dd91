"""Interim results of a study that spans sessions: the evaluate and figures stages on the runs that
have finished, while the pipeline is still training the others.

    python -m getlib.stages.interim [PARAMS] [--recheck]   # default params.yaml; make interim PROFILE=claims

DVC runs evaluate only once every distill stage is done; a long study (the claims profile) commits
its evidence as it grows with this instead. It evaluates the students whose run has finished here
(student.pt written) and has no current record, writing each one's record
(results/<profile>/runs/<student>.json, `getlib.records`), and takes the other students' rows from
their records while those still stand for the run the profile describes (same settings, pairs,
training and scoring code, machine): a session need not keep the weights of earlier sessions' runs,
and a study's evaluation grows run by run. With --recheck, the finished runs here that have a current
record are evaluated again and must reproduce it, or this stops and says where they differ. It writes the
same files the two stages write under results/<profile>/, and results/<profile>/interim.json lists
the runs evaluated here, those taken from records, the stale records (and why) and the pending runs.
A later `dvc repro` of the whole profile overwrites them with the complete results.
"""
from __future__ import annotations

import argparse
import dataclasses

from getlib.config import Params, load_params, project_root
from getlib.io import atomic_write_json
from getlib.records import evaluation_identity, read_record, record_problems
from getlib.stages.evaluate import evaluate
from getlib.stages.figures import make_figures
from getlib.train import resume_problems, run_summary


def finished_students(p: Params) -> list[str]:
    """The students whose run is finished and is the run the profile describes: student.pt written,
    all max_steps done, and nothing `train.resume_problems` objects to (settings, pairs, code, files)."""
    done = []
    for key in p.students:
        cfg = p.train_config(key)
        if (p.work("students", key, "student.pt").is_file() and not resume_problems(cfg, p.nproc(key))
                and run_summary(cfg.out)["steps"] == cfg.max_steps):
            done.append(key)
    return done


def interim(p: Params, recheck: bool = False) -> dict:
    done = finished_students(p)
    recorded, stale, before = {}, {}, {}   # before: the current records of runs evaluated here again
    identity = evaluation_identity(p)
    for key in p.students:
        record = read_record(p, key)
        if record is None:
            continue
        problems = record_problems(p, key, record, identity)
        if problems:
            if key not in done:   # (a finished run here is evaluated again, its record replaced)
                stale[key] = problems
        elif key in done and recheck:
            before[key] = record
        else:
            recorded[key] = record
    keys = [k for k in p.students if k in done or k in recorded]
    if not keys:
        raise FileNotFoundError(f"no finished run under {p.work('students')} and no current record under "
                                f"{p.results('runs')}: nothing to evaluate yet")
    conditions = [c for c in p.conditions if any(p.students[k].condition == c for k in keys)]
    sub = dataclasses.replace(p, students={k: p.students[k] for k in keys}, conditions=conditions)
    evaluate(sub, recorded, expected=before)
    make_figures(sub)
    summary = {"evaluated": [k for k in done if k not in recorded], "recorded": list(recorded), "stale": stale,
               "pending": [k for k in p.students if k not in keys]}
    atomic_write_json(p.results("interim.json"), summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("params", nargs="?", default="params.yaml", help="the profile's params file")
    parser.add_argument("--recheck", action="store_true",
                        help="evaluate again the finished runs here that have a current record; they must reproduce it")
    args = parser.parse_args(argv)
    p = load_params(args.params, root=project_root())
    print(interim(p, args.recheck))


if __name__ == "__main__":
    main()
