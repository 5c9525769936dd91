"""Stage evaluate: every source scored in one feature space with the same sample counts."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from getlib.checkpoints import load_teacher_of
from getlib.config import Params, device_of
from getlib.evaluate import compare, decoding_rule, deq_analysis, sample_student, training_cost
from getlib.io import atomic_write_json, write_results
from getlib.metrics import score_images
from getlib.models import GET, load_student
from getlib.settings import recipe_of
from getlib.stages.data import load_data
from getlib.stages.features import feature_space


def evaluate(p: Params) -> dict:
    """results/<profile>/evaluation/:
    - comparison: real held-out floor, teacher, every student (FID/KID mean and spread over seeds,
      NFE, params, FLOPs per sample, images/s, training cost);
    - iterations: FID of each GET against inference iterations, per solver, with its residuals;
    - decoding: each GET's samples decoded by each rule (lowest absolute / relative residual, last);
    - fixed_point: each GET's plain iterates k = 1..12: norm, residuals, cosine, FID of iterate k;
    - training: FID of each student's EMA snapshots against training step."""
    ds = load_data(p)
    space = feature_space(p)
    reference = np.load(p.work("features", "reference.npy"))
    device = device_of(p.evaluate.device)
    e = p.evaluate
    n = e.num_samples
    seeds = tuple(range(e.seeds))
    rows, sweep, decoding, diagnostics, curve, models = [], [], [], [], [], {}
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
                    got = deq_analysis(model, reference, space, tmp / condition / key, n, seeds, e.seed_start,
                                       tuple(e.sweep_iterations), tuple(e.sweep_solvers), e.batch_size, device)
                    sweep += [{"student": key, **r} for r in got["iterations"]]
                    decoding += [{"student": key, "recipe": recipe_of(model.deq_cfg), **r} for r in got["decoding"]]
                    diagnostics += [{"student": key, **r} for r in got["fixed_point"]]
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
            model = models[key]
            r["recipe"], r["rule"] = (recipe_of(model.deq_cfg), decoding_rule(model)) if isinstance(model, GET) else ("-", "-")
            r.update(lr=cfg.lr, train_seed=cfg.seed, num_pairs=cfg.num_pairs, shuffle_targets=cfg.shuffle_targets)
            r.update(training_cost(models[key], cfg.loss, cfg.gamma))
            r["train_steps"], r["batch_size"] = cfg.max_steps, cfg.batch_size
            r["train_pflops"] = r["train_gflops_per_image"] * cfg.max_steps * cfg.batch_size / 1e6
    note = (f"FID/KID in the {space.name} feature space, {n} images per source against {len(reference)} "
            f"reference images; generated sources: mean and spread over {len(seeds)} disjoint seed ranges.")
    out = p.results("evaluation")
    p.results("interim.json").unlink(missing_ok=True)   # a complete evaluation supersedes an interim one
    write_results(rows, out, "comparison", "One-step students against the teacher", note)
    if sweep:
        write_results(sweep, out, "iterations", "FID against inference iterations (test-time compute)",
                      note + " The residual of k iterations is that of the step that produced the returned iterate, "
                      "||z_j - z_(j-1)|| (in the fixed_point table: row j - 1); first seed range.")
    if decoding:
        write_results(decoding, out, "decoding", "GET's samples under each decoding rule (same seeds and iterations)",
                      note + " Rules: abs / rel = the iterate with the lowest absolute / relative residual (abs is "
                      "the paper's), last = the last iterate; own = the rule the student's recipe samples with.")
    if diagnostics:
        write_results(diagnostics, out, "fixed_point",
                      "Fixed-point diagnostics: the plain iterates z_k = f^k(z0) (sample means; FID of decoding z_k)",
                      note + " Residuals of iterate k: ||f(z_k) - z_k|| and that over ||f(z_k)||; FID on the first "
                      "seed range.")
    if curve:
        write_results(curve, out, "training",
                      "FID against training steps (EMA snapshots, the first evaluation seed range)", note)
    metrics = {re.sub(r"[^a-z0-9-]+", "_", r["source"].lower()).strip("_"):   # 'teacher (uncond)' -> teacher_uncond
               {"fid": r["fid"], "fid_std": r["fid_std"], "kid": r["kid"]} for r in rows}
    atomic_write_json(p.results("metrics.json"), {"features": space.name, "num_samples": n, **metrics})
    return {"comparison": rows, "iterations": sweep, "decoding": decoding, "fixed_point": diagnostics,
            "training": curve}
