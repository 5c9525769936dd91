"""Interim results of a study that spans sessions: the evaluate and figures stages on the runs that
have finished, while the pipeline is still training the others.

    python -m getlib.stages.interim [PARAMS] [--recheck]   # default params.yaml; make interim PROFILE=claims

DVC runs evaluate only once every distill stage is done; a long study (the claims profile) commits
its evidence as it grows with this instead. It evaluates the students whose run has finished here
(student.pt written) and has no current record, writing each one's record
(results/<profile>/runs/<student>.json, `getlib.records`), and takes the other students' rows from
their records while those still stand for the run the profile describes (same settings, pairs,
features, training and scoring code; any machine): a session need not keep the weights of earlier
sessions' runs, and a study's evaluation grows run by run, on whatever machines its sessions get.
With --recheck, the finished runs here whose current record this machine made (the same machine
name, `records.made_here`) are evaluated again and must reproduce it, or this stops and says where
they differ; the others are listed in interim.json as not_rechecked. It writes the
same files the two stages write under results/<profile>/, and results/<profile>/interim.json lists
the runs evaluated here, those taken from records, the stale records (and why) and the pending runs.
A later `dvc repro` of the whole profile overwrites them with the complete results.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from getlib.config import Params, load_params, project_root
from getlib.io import atomic_write_json, read_json
from getlib.records import evaluation_identity, made_here, read_record, record_problems
from getlib.stages.distill import run_is_finished
from getlib.stages.evaluate import evaluate
from getlib.stages.figures import make_figures
from getlib.runs import continues


def finished_students(p: Params) -> list[str]:
    """The students whose run is finished here and is the run the profile describes."""
    return [key for key in p.students if run_is_finished(p.train_config(key), p.nproc(key))]


def interim(p: Params, recheck: bool = False) -> dict:
    done = finished_students(p)
    recorded, stale, before = {}, {}, {}   # before: the current records of runs evaluated here again
    elsewhere = []   # with recheck: finished here, but its record made on another machine (kept, not rechecked)
    identity = evaluation_identity(p)
    for key in p.students:
        record = read_record(p, key)
        if record is None:
            continue
        problems = record_problems(p, key, record, identity)
        if problems:
            if key not in done:   # (a finished run here is evaluated again, its record replaced)
                stale[key] = problems
        elif key in done and recheck and made_here(record):
            before[key] = record
        else:
            if key in done and recheck:   # (another machine's kernels make other bytes: nothing to compare)
                elsewhere.append(key)
            recorded[key] = record
    keys = [k for k in p.students if k in done or k in recorded]
    if not keys:
        raise FileNotFoundError(f"no finished run under {p.work('students')} and no current record under "
                                f"{p.results('runs')}: nothing to evaluate yet")
    conditions = [c for c in p.conditions if any(p.students[k].condition == c for k in keys)]
    sub = dataclasses.replace(p, students={k: p.students[k] for k in keys}, conditions=conditions)
    evaluate(sub, recorded, expected=before)
    make_figures(sub)
    if elsewhere:
        print(f"not rechecked, their records made on another machine: {', '.join(elsewhere)}", file=sys.stderr)
    summary = {"evaluated": [k for k in done if k not in recorded], "recorded": list(recorded), "stale": stale,
               **({"not_rechecked": elsewhere} if recheck else {}),
               "pending": [k for k in p.students if k not in keys], "compute": study_compute(sub)}
    atomic_write_json(p.results("interim.json"), summary)
    return summary


def study_compute(p: Params) -> dict:
    """What training `p`'s scored students cost, from the evaluation's rows (training PFLOPs) and the
    distill stage's results/<profile>/timing/<student>.json (wall-clock seconds of its process). A
    student that continues a shorter one (`runs.continues`, as the distill stage does) is counted
    once: a chain of them costs what its longest run cost, whose record carries the seconds of the run it continued. Students with no
    timing/<student>.json (a record from a copy without it) count in PFLOPs, not in hours."""
    rows = {r["source"]: r for r in read_json(p.results("evaluation", "comparison.json"))}
    scored = [k for k in p.students if rows.get(k, {}).get("train_pflops") is not None]
    cfgs = {k: p.train_config(k) for k in scored}
    longest_first = sorted(scored, key=lambda k: -cfgs[k].max_steps)
    head_of = {}   # student -> its chain's longest student, which the chain's shorter ones continue into
    for key in longest_first:
        head_of[key] = next((h for h in longest_first if h in head_of and h == head_of[h]
                             and continues(cfgs[h], cfgs[key])), key)
    heads = list(dict.fromkeys(head_of[k] for k in scored))   # in the profile's order
    # the distill stage's timing/<student>.json (or train/<student>.json, which held them before)
    found = {k: next((read_json(f).get("seconds") for f in (p.results("timing", f"{k}.json"),
                                                             p.results("train", f"{k}.json"))
                      if f.is_file() and read_json(f).get("seconds") is not None), None) for k in heads}
    timed = [k for k in heads if found[k] is not None]
    seconds = sum(found[k] for k in timed)
    return {"scored_students": len(scored), "trained_runs": len(heads),
            "training_pflops": sum(rows[k]["train_pflops"] for k in heads),
            "process_hours": seconds / 3600, "untimed": sorted(set(heads) - set(timed))}


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
