"""Interim results of a study that spans sessions: the evaluate and figures stages on the runs that
have finished, while the pipeline is still training the others.

    python -m getlib.stages.interim [PARAMS]     # default params.yaml; make interim PROFILE=claims

DVC runs evaluate only once every distill stage is done; a long study (the claims profile) commits
its evidence as it grows with this instead. It restricts the profile to the students whose run has
finished (student.pt written), writes the same files the two stages write under results/<profile>/,
and lists the finished and pending runs in results/<profile>/interim.json. A later `dvc repro` of
the whole profile overwrites them with the complete results.
"""
from __future__ import annotations

import argparse
import dataclasses

from getlib.config import Params, load_params, project_root
from getlib.io import atomic_write_json
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


def interim(p: Params) -> dict:
    done = finished_students(p)
    if not done:
        raise FileNotFoundError(f"no finished run under {p.work('students')}: nothing to evaluate yet")
    conditions = [c for c in p.conditions if any(p.students[k].condition == c for k in done)]
    sub = dataclasses.replace(p, students={k: p.students[k] for k in done}, conditions=conditions)
    evaluate(sub)
    make_figures(sub)
    summary = {"finished": done, "pending": [k for k in p.students if k not in done]}
    atomic_write_json(p.results("interim.json"), summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("params", nargs="?", default="params.yaml", help="the profile's params file")
    args = parser.parse_args(argv)
    p = load_params(args.params, root=project_root())
    print(interim(p))


if __name__ == "__main__":
    main()
