"""Stage evaluate: every source scored in one feature space with the same sample counts."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from getlib.checkpoints import load_teacher_of
from getlib.config import Params, device_of
from getlib.evaluate import compare, iteration_sweep, sample_student, training_cost
from getlib.io import atomic_write_json, write_results
from getlib.metrics import score_images
from getlib.models import GET, load_student
from getlib.stages.data import load_data
from getlib.stages.features import feature_space


def evaluate(p: Params) -> dict:
    """results/<profile>/evaluation/:
    - comparison: real held-out floor, teacher, every student (FID/KID mean and spread over seeds,
      NFE, params, FLOPs per sample, images/s, training cost);
    - iterations: FID of each GET against inference iterations, per solver, with its residuals;
    - training: FID of each student's EMA snapshots against training step."""
    ds = load_data(p)
    space = feature_space(p)
    reference = np.load(p.work("features", "reference.npy"))
    device = device_of(p.evaluate.device)
    e = p.evaluate
    n = e.num_samples
    seeds = tuple(range(e.seeds))
    rows, sweep, curve, models = [], [], [], {}
    folder = p.work("evaluate")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp = Path(tmp)
        for i, condition in enumerate(p.conditions):
            teacher, _ = load_teacher_of(p, condition)
            students = {key: load_student(path) for key, path in p.student_files(condition).items()}
            models.update(students)
            part = compare(students, teacher.to(device), reference, ds.uint8(ds.held_raw) if i == 0 else None, space,
                           tmp / condition, n, seeds, ds.shape, ds.num_classes if condition == "cond" else None,
                           p.sampler, e.batch_size, device, e.seed_start)
            for r in part:
                r["condition"] = "-" if r["source"].startswith("real") else condition
                r["kind"] = ("real" if r["source"].startswith("real") else "teacher" if r["source"] == "teacher"
                             else "GET" if isinstance(students.get(r["source"]), GET) else "ViT")
                if r["source"] == "teacher":
                    r["source"] = f"teacher ({condition})"
            rows += part
            for key, model in students.items():
                if isinstance(model, GET):
                    for r in iteration_sweep(model, reference, space, tmp / condition / f"sweep-{key}", n,
                                             tuple(e.sweep_iterations), tuple(e.sweep_solvers), e.seed_start,
                                             e.batch_size, device):
                        sweep.append({"student": key, **r})
                for snap in sorted(p.work("students", key, "snapshots").glob("step-*.pt")):
                    step = int(snap.stem.split("-")[1])
                    images, _ = sample_student(load_student(snap), n, e.seed_start, e.batch_size, device)
                    s = score_images(images, reference, space, tmp / condition / f"curve-{key}-{step}")
                    curve.append({"student": key, "step": step, "images_seen": step * p.train_config(key).batch_size,
                                  "fid": s["fid"], "kid": s["kid"], "n": s["n"], "features": s["features"]})
    for r in rows:
        key = r["source"]
        if key in p.students:
            cfg = p.train_config(key)
            r["model"] = p.students[key].model
            r.update(training_cost(models[key], cfg.loss, cfg.gamma))
            r["train_steps"], r["batch_size"] = cfg.max_steps, cfg.batch_size
            r["train_pflops"] = r["train_gflops_per_image"] * cfg.max_steps * cfg.batch_size / 1e6
    note = (f"FID/KID in the {space.name} feature space, {n} images per source against {len(reference)} "
            f"reference images; generated sources: mean and spread over {len(seeds)} disjoint seed ranges.")
    out = p.results("evaluation")
    write_results(rows, out, "comparison", "One-step students against the teacher", note)
    if sweep:
        write_results(sweep, out, "iterations", "FID against inference iterations (test-time compute)", note)
    if curve:
        write_results(curve, out, "training",
                      "FID against training steps (EMA snapshots, the first evaluation seed range)", note)
    metrics = {re.sub(r"[^a-z0-9-]+", "_", r["source"].lower()).strip("_"):   # 'teacher (uncond)' -> teacher_uncond
               {"fid": r["fid"], "fid_std": r["fid_std"], "kid": r["kid"]} for r in rows}
    atomic_write_json(p.results("metrics.json"), {"features": space.name, "num_samples": n, **metrics})
    return {"comparison": rows, "iterations": sweep, "training": curve}
