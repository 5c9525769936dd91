"""Stage evaluate: every source scored in one feature space with the same sample counts."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from getlib import progress
from getlib.checkpoints import load_teacher_of
from getlib.config import Params, device_of
from getlib.evaluate import compare, decoding_rule, deq_analysis, sample_student, training_cost
from getlib.io import atomic_write_json, write_results
from getlib.metrics import score_images
from getlib.models import GET, load_student
from getlib.notebook import publishing
from getlib.records import TABLES, evaluation_identity, record_path, score_differences, write_record
from getlib.settings import recipe_of
from getlib.stages.data import load_data
from getlib.stages.features import feature_space


def evaluate(p: Params, recorded: dict[str, dict] | None = None, expected: dict[str, dict] | None = None) -> dict:
    """results/<profile>/evaluation/:
    - comparison: real held-out floor, teacher, every student (FID/KID mean and spread over seeds,
      NFE, params, FLOPs per sample, images/s, training cost);
    - iterations: FID of each GET against inference iterations, per solver, with its residuals;
    - decoding: each GET's samples decoded by each rule (lowest absolute / relative residual, last);
    - fixed_point: each GET's plain iterates k = 1..12: norm, residuals, cosine, FID of iterate k;
    - training: FID of each student's EMA snapshots against training step.
    Each student's rows are also written to its record, results/<profile>/runs/<student>.json
    (`getlib.records`). `recorded` ({student: record}, for students whose run is not here) supplies
    rows from committed records instead: `getlib.stages.interim` passes the current ones. A student
    in `expected` ({student: record}) is evaluated and must reproduce that record's rows (all but the
    clock-measured fields), else a ValueError names the differences and nothing is written. Nothing
    under results/ is written either unless `publishing()` (a notebook run by hand): the tables are
    returned all the same."""
    recorded, expected = recorded or {}, expected or {}
    ds = load_data(p)
    space = feature_space(p)
    reference = np.load(p.work("features", "reference.npy"))
    device = device_of(p.evaluate.device)
    e = p.evaluate
    tables = {name: [] for name in TABLES}
    fresh = {}   # the rows of the students evaluated here: their records are written once all agree
    folder = p.work("evaluate")
    folder.mkdir(parents=True, exist_ok=True)
    scored = [key for key in p.students if key not in recorded]   # (each a bar step, as each teacher)
    bar = progress.bar(len(p.conditions) + len(scored), "evaluate", "source")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp = Path(tmp)
        for i, condition in enumerate(p.conditions):
            teacher, _ = load_teacher_of(p, condition)
            part = compare({}, teacher.to(device), reference, ds.uint8(ds.held_raw) if i == 0 else None, space,
                           tmp / condition, e.num_samples, tuple(range(e.seeds)), ds.shape,
                           ds.num_classes if condition == "cond" else None, p.sampler, e.batch_size, device,
                           e.seed_start)
            for r in part:
                real = r["source"].startswith("real")
                r.update(condition="-" if real else condition, kind="real" if real else "teacher")
                r["source"] = r["source"] if real else f"teacher ({condition})"
            tables["comparison"] += part
            bar.update(1)
            for key, student in p.students.items():
                if student.condition != condition:
                    continue
                if key in recorded:
                    rows = recorded[key]["rows"]
                else:
                    rows = student_rows(p, key, reference, space, tmp / condition / key, device)
                    if key in expected and (differences := score_differences(expected[key]["rows"], rows)):
                        raise ValueError(f"{key}: its run, evaluated again, does not reproduce "
                                         f"{record_path(p, key)}: " + "; ".join(differences[:5]))
                    fresh[key] = rows
                    bar.update(1)
                for name in TABLES:
                    tables[name] += rows.get(name, [])
    bar.close()
    if not publishing():
        return tables
    note = (f"FID/KID in the {space.name} feature space, {e.num_samples} images per source against {len(reference)} "
            f"reference images; generated sources: mean and spread over {e.seeds} disjoint seed ranges.")
    identity = evaluation_identity(p)
    for key, rows in fresh.items():
        write_record(p, key, rows, identity)
    out = p.results("evaluation")
    p.results("interim.json").unlink(missing_ok=True)   # a complete evaluation supersedes an interim one
    write_results(tables["comparison"], out, "comparison", "One-step students against the teacher", note)
    if tables["iterations"]:
        write_results(tables["iterations"], out, "iterations", "FID against inference iterations (test-time compute)",
                      note + " The residual of k iterations is that of the step that produced the returned iterate, "
                      "||z_j - z_(j-1)|| (in the fixed_point table: row j - 1); first seed range.")
    if tables["decoding"]:
        write_results(tables["decoding"], out, "decoding",
                      "GET's samples under each decoding rule (same seeds and iterations)",
                      note + " Rules: abs / rel = the iterate with the lowest absolute / relative residual (abs is "
                      "the paper's), last = the last iterate; own = the rule the student's recipe samples with.")
    if tables["fixed_point"]:
        write_results(tables["fixed_point"], out, "fixed_point",
                      "Fixed-point diagnostics: the plain iterates z_k = f^k(z0) (sample means; FID of decoding z_k)",
                      note + " Residuals of iterate k: ||f(z_k) - z_k|| and that over ||f(z_k)||; FID on the first "
                      "seed range.")
    if tables["training"]:
        write_results(tables["training"], out, "training",
                      "FID against training steps (EMA snapshots, the first evaluation seed range)", note)
    metrics = {re.sub(r"[^a-z0-9-]+", "_", r["source"].lower()).strip("_"):   # 'teacher (uncond)' -> teacher_uncond
               {"fid": r["fid"], "fid_std": r["fid_std"], "kid": r["kid"]} for r in tables["comparison"]}
    atomic_write_json(p.results("metrics.json"), {"features": space.name, "num_samples": e.num_samples, **metrics})
    return tables


def student_rows(p: Params, key: str, reference: np.ndarray, space, workdir: Path, device) -> dict[str, list[dict]]:
    """Every evaluation row of student `key` (its run in work/<profile>/students/<key>/), by table."""
    e = p.evaluate
    n, seeds = e.num_samples, tuple(range(e.seeds))
    cfg = p.train_config(key)
    model = load_student(p.work("students", key, "student.pt"))
    get = isinstance(model, GET)
    row, = compare({key: model}, None, reference, None, space, workdir, n, seeds, device=device,
                   batch_size=e.batch_size, seed_start=e.seed_start)
    row.update(condition=p.students[key].condition, kind="GET" if get else "ViT", model=p.students[key].model,
               recipe=recipe_of(model.deq_cfg) if get else "-", rule=decoding_rule(model) if get else "-",
               lr=cfg.lr, train_seed=cfg.seed, num_pairs=cfg.num_pairs, shuffle_targets=cfg.shuffle_targets,
               **training_cost(model, cfg.loss, cfg.gamma))
    row.update(train_steps=cfg.max_steps, batch_size=cfg.batch_size,
               train_pflops=row["train_gflops_per_image"] * cfg.max_steps * cfg.batch_size / 1e6)
    rows = {"comparison": [row], "iterations": [], "decoding": [], "fixed_point": [], "training": []}
    if get:
        got = deq_analysis(model, reference, space, workdir, n, seeds, e.seed_start, tuple(e.sweep_iterations),
                           tuple(e.sweep_solvers), e.batch_size, device)
        rows["iterations"] = [{"student": key, **r} for r in got["iterations"]]
        rows["decoding"] = [{"student": key, "recipe": row["recipe"], **r} for r in got["decoding"]]
        rows["fixed_point"] = [{"student": key, **r} for r in got["fixed_point"]]
    for snap in sorted(p.work("students", key, "snapshots").glob("step-*.pt")):
        step = int(snap.stem.split("-")[1])
        images, _ = sample_student(load_student(snap), n, e.seed_start, e.batch_size, device)
        s = score_images(images, reference, space, workdir / f"curve-{step}")
        rows["training"].append({"student": key, "step": step, "images_seen": step * cfg.batch_size,
                                 "fid": s["fid"], "kid": s["kid"], "n": s["n"], "features": s["features"]})
    return rows
