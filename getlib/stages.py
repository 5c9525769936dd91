"""The pipeline's stages: what each notebook in notebooks/ calls, one function per stage.

    data -> features -> teacher@{cond} -> pairs@{cond} -> distill@{student} -> evaluate -> figures

Each function reads the validated `Params`, writes its heavy outputs under work/<profile>/ (cached
by DVC, git-ignored) and its small, reviewable ones under results/<profile>/ (committed), and
returns a summary for the notebook to show. Every file is written atomically; the pair and
distillation stages resume an interrupted run.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from getlib import data as datasets
from getlib.config import Params, ParamsError
from getlib.evaluate import (FeatureSpace, compare, digits_feature_space, folder_features, inception_feature_space,
                             iteration_sweep, sample_student, score_images, training_cost,
                             write_images, write_results)
from getlib.features import load_feature_net, split_indices, train_feature_net
from getlib.io import atomic_copy, atomic_save_npz, atomic_write, atomic_write_json, remove_owned
from getlib.models import GET
from getlib.pairs import PairSpec, generate_pairs, pair_set_problems, read_manifest, teacher_from_checkpoint
from getlib.train import cli_args, load_student, resume_problems, run_summary, train, training_log

__all__ = ["prepare_data", "load_data", "make_features", "feature_space", "make_teacher", "load_teacher_of",
           "make_pairs", "distill", "evaluate", "make_figures", "device_of", "Dataset"]


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("device cuda was asked for, but torch sees no GPU here (use auto or cpu)")
    return torch.device(name)


# ------------------------------------------------------------------------------------------------
# data: the real images, one format for every data set
# ------------------------------------------------------------------------------------------------

class Dataset:
    """The stage's output, work/<profile>/data/dataset.npz: integer pixels `raw` with `levels`
    (model space = raw / (levels / 2) - 1, exact for digits' 0..16 and CIFAR's 0..255), labels,
    and a held-out set that no generative model sees (the FID floor)."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise FileNotFoundError(f"no data set at {path}: run the data stage first")
        with np.load(path) as f:
            self.levels = int(f["levels"])
            self.train_raw, self.train_labels = torch.from_numpy(f["train_raw"]), torch.from_numpy(f["train_labels"])
            self.held_raw, self.held_labels = torch.from_numpy(f["held_raw"]), torch.from_numpy(f["held_labels"])
            self.name = str(f["name"])

    def model_space(self, raw: Tensor) -> Tensor:
        return raw.float() / (self.levels / 2) - 1

    @property
    def train_images(self) -> Tensor:
        """Training images in model space [-1, 1], (N, C, H, W)."""
        return self.model_space(self.train_raw)

    def uint8(self, raw: Tensor) -> Tensor:
        """As the evaluation sees images: model space -> uint8 (getlib.data.to_uint8)."""
        return datasets.to_uint8(self.model_space(raw))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_raw.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.train_labels.max()) + 1


def prepare_data(p: Params) -> dict:
    """Load the data set named in params, check it, write work/<profile>/data/dataset.npz."""
    start = time.perf_counter()
    if p.data.dataset == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        raw, labels, levels = torch.from_numpy(d.images.astype(np.uint8)).unsqueeze(1), torch.from_numpy(d.target), 16
        if p.data.held_out >= len(raw):
            raise ParamsError(f"data.held_out {p.data.held_out} must be below the {len(raw)} digits")
        train_idx, held_idx = split_indices(len(raw), p.data.held_out, p.data.split_seed)
        train_raw, train_labels, held_raw, held_labels = raw[train_idx], labels[train_idx], raw[held_idx], labels[held_idx]
    else:  # cifar10: its own train / test split (the test images are the held-out set)
        root = _path(p, p.data.root)
        train_raw, train_labels = datasets.cifar10(root, train=True, check_md5=p.data.check_md5)
        held_raw, held_labels = datasets.cifar10(root, train=False, check_md5=p.data.check_md5)
        levels = 255
    for name, x in (("train", train_raw), ("held-out", held_raw)):
        if x.ndim != 4 or x.shape[-1] != x.shape[-2] or x.shape[1] not in (1, 3):
            raise ValueError(f"{p.data.dataset} {name} images must be (N, 1 or 3, H, H), got {tuple(x.shape)}")
    out = p.work("data", "dataset.npz")
    atomic_save_npz(out, name=np.array(p.data.dataset), levels=np.array(levels),
                    train_raw=train_raw.numpy().astype(np.uint8), train_labels=train_labels.numpy().astype(np.int64),
                    held_raw=held_raw.numpy().astype(np.uint8), held_labels=held_labels.numpy().astype(np.int64))
    summary = {"dataset": p.data.dataset, "train": len(train_raw), "held_out": len(held_raw),
               "image_shape": list(train_raw.shape[1:]), "classes": int(train_labels.max()) + 1,
               "seconds": time.perf_counter() - start}
    atomic_write_json(p.results("data.json"), summary)
    return summary


def load_data(p: Params) -> Dataset:
    return Dataset(p.work("data", "dataset.npz"))


def _path(p: Params, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else p.root / path


# ------------------------------------------------------------------------------------------------
# features: the FID feature space and the real images' reference features
# ------------------------------------------------------------------------------------------------

def feature_space(p: Params) -> FeatureSpace:
    """The feature space every FID of this profile uses."""
    device = device_of(p.evaluate.device)
    if p.features.network == "inception":
        return inception_feature_space(p.features.mode, device)
    net, _ = load_feature_net(p.work("features", "feature_net.pt"))
    return digits_feature_space(net, device, name=f"{p.data.dataset}-cnn")


def make_features(p: Params) -> dict:
    """Train the classifier (network 'classifier') and compute the reference features: the
    training images, through the same PNG-folder road as every generated set."""
    ds = load_data(p)
    folder = p.work("features")
    start = time.perf_counter()
    report = {}
    if p.features.network == "classifier":
        images = torch.cat([ds.train_images, ds.model_space(ds.held_raw)])
        labels = torch.cat([ds.train_labels, ds.held_labels])
        n = len(ds.train_raw)
        _, report = train_feature_net(images, labels, torch.arange(n), torch.arange(n, len(images)),
                                      epochs=p.features.epochs, seed=p.data.split_seed,
                                      out_path=folder / "feature_net.pt")
    space = feature_space(p)
    with tempfile.TemporaryDirectory(dir=_mkdir(folder)) as tmp:
        if p.features.network == "inception" and p.features.reference == "test":
            reference_raw = ds.held_raw
        else:
            reference_raw = ds.train_raw
        reference = folder_features(write_images(ds.uint8(reference_raw), Path(tmp) / "reference"), space)
    atomic_write(folder / "reference.npy", lambda f: np.save(f, reference))
    summary = {"network": space.name, "reference": p.features.reference if p.features.network == "inception"
               else "train", "n_reference": len(reference), "feature_dim": int(reference.shape[1]),
               **{k: v for k, v in report.items() if k != "seconds"}, "seconds": time.perf_counter() - start}
    atomic_write_json(p.results("features.json"), summary)
    return summary


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------------------------------
# teacher@condition: train the embedded one, or take an official EDM checkpoint
# ------------------------------------------------------------------------------------------------

def teacher_file(p: Params, condition: str) -> Path:
    """The teacher stage's file for `condition`, by the profile's teacher.source: teacher.pt
    (trained here) or the copy of the EDM checkpoint that teacher.checkpoints names."""
    folder = p.work("teacher", condition)
    if p.teacher.source == "train":
        path = folder / "teacher.pt"
    else:
        name = p.teacher.checkpoints.get(condition)
        if name is None:
            raise ParamsError(f"teacher.checkpoints.{condition} is not set: name the EDM .pkl for the "
                              f"{condition} teacher (see README, CIFAR-10 profiles)")
        path = folder / Path(name).name
    if not path.is_file():
        raise FileNotFoundError(f"no teacher at {path}: run the teacher@{condition} stage first")
    return path


def load_teacher_of(p: Params, condition: str) -> tuple[nn.Module, dict]:
    """The teacher denoiser D(x, sigma, labels) of `condition` and its identity (kind, sha256)."""
    return teacher_from_checkpoint(teacher_file(p, condition),
                                   _path(p, p.teacher.edm_repo) if p.teacher.edm_repo else None,
                                   trust_pickle=p.teacher.trust_pickle)


def make_teacher(p: Params, condition: str, log=None) -> dict:
    """source 'train': train the embedded teacher on the training images; source 'checkpoint':
    copy the named EDM pickle in (so DVC caches and tracks it) and check that it loads."""
    from getlib.teacher import TeacherConfig, train_teacher
    if p.teacher.source == "checkpoint":
        src = p.teacher.checkpoint(condition, p.root)
        atomic_copy(src, p.work("teacher", condition, src.name))
        denoise, ident = load_teacher_of(p, condition)
        summary = {"condition": condition, **ident, "params": sum(x.numel() for x in denoise.parameters())}
    else:
        ds, folder = load_data(p), _mkdir(p.work("teacher", condition))
        cfg = TeacherConfig(**p.teacher.train_settings(), cond=condition == "cond")
        summary = {"condition": condition, "kind": "embedded",
                   **train_teacher(ds.train_images, ds.train_labels, cfg, folder / "teacher.pt", log)}
        summary["params"] = sum(x.numel() for x in load_teacher_of(p, condition)[0].parameters())
    atomic_write_json(p.results(f"teacher-{condition}.json"), summary)
    return summary


# ------------------------------------------------------------------------------------------------
# pairs@condition
# ------------------------------------------------------------------------------------------------

def pair_spec(p: Params, condition: str) -> PairSpec:
    ds = load_data(p)
    return PairSpec(num_pairs=p.pairs.num_pairs, image_shape=ds.shape,
                    num_classes=ds.num_classes if condition == "cond" else None, seed_start=p.pairs.seed_start,
                    shard_size=p.pairs.shard_size, image_dtype=p.pairs.image_dtype, batch_size=p.pairs.batch_size)


def make_pairs(p: Params, condition: str, progress=None) -> dict:
    """Generate (or finish) the pair set of `condition` into work/<profile>/pairs/<condition>.

    DVC keeps this folder between runs (persist) so that an interrupted generation resumes. It is
    resumed, or a finished one reused, only when `pair_set_problems` finds nothing: same settings,
    teacher, sampler and code, every shard intact. Otherwise it is replaced, and the reason printed
    (a finished set is also in DVC's cache). With pairs.nproc > 1 it runs under torchrun."""
    root = p.work("pairs", condition)
    spec = pair_spec(p, condition)
    denoise, ident = load_teacher_of(p, condition)
    problems = pair_set_problems(root, spec, ident, p.sampler)
    if problems:
        print(f"{root}: generating anew: {'; '.join(problems)}", flush=True)
        remove_owned(root, p.work("pairs"))
    start = time.perf_counter()
    if p.pairs.nproc > 1:
        args = ["--teacher", str(teacher_file(p, condition)), "--out", str(root), "--num-pairs", str(spec.num_pairs),
                "--seed-start", str(spec.seed_start), "--shard-size", str(spec.shard_size),
                "--batch-size", str(spec.batch_size), "--image-dtype", spec.image_dtype,
                "--image-shape", *map(str, spec.image_shape), "--steps", str(p.sampler.num_steps),
                "--solver", p.sampler.solver, "--device", str(device_of(p.pairs.device).type)]
        if spec.num_classes:
            args += ["--num-classes", str(spec.num_classes)]
        if p.teacher.edm_repo:
            args += ["--edm-repo", str(_path(p, p.teacher.edm_repo))]
        if p.teacher.trust_pickle:
            args += ["--trust-pickle"]
        _torchrun(p.pairs.nproc, "getlib.pairs", args)
        manifest = read_manifest(root)
    else:
        device = device_of(p.pairs.device)
        manifest = generate_pairs(denoise.to(device), root, spec, ident, p.sampler, device, progress=progress)
    seconds = time.perf_counter() - start
    summary = {"condition": condition, "num_pairs": manifest["num_pairs"], "shards": len(manifest["shards"]),
               "bytes_per_pair": manifest["bytes_per_pair"],
               "bytes_per_pair_vs_released": manifest["bytes_per_pair_vs_released"],
               "teacher_nfe": p.sampler.nfe, "seconds": seconds, "pairs_per_s": spec.num_pairs / seconds}
    atomic_write_json(p.results(f"pairs-{condition}.json"), summary)
    return summary


def _torchrun(nproc: int, module: str, args: list[str]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", module, *args]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


# ------------------------------------------------------------------------------------------------
# distill@student
# ------------------------------------------------------------------------------------------------

def distill(p: Params, key: str) -> dict:
    """Train student `key` on its condition's pairs; copy its log into results/.

    DVC keeps the run folder between runs (persist) so that an interrupted run resumes from its
    checkpoint. It is resumed (a finished one reused) only when `train.resume_problems` finds
    nothing: same settings, pair set, training code, and an intact checkpoint. Otherwise the folder
    is replaced and the reason printed (a finished run is also in DVC's cache)."""
    cfg = p.train_config(key)
    out = Path(cfg.out)
    nproc = p.nproc(key)
    problems = resume_problems(cfg, nproc)
    if problems:
        print(f"{out}: starting anew: {'; '.join(problems)}", flush=True)
        remove_owned(out, p.work("students"))
    if nproc > 1:
        _torchrun(nproc, "getlib.train", cli_args(cfg))
        summary = run_summary(out)
    else:
        summary = train(cfg)
    _write_csv(training_log(out), p.results("train", f"{key}.csv"))   # with the wall-clock columns
    atomic_write_json(p.results("train", f"{key}.json"), {k: v for k, v in summary.items() if k != "config"})
    return summary


# ------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------

def students_of(p: Params, condition: str) -> dict[str, nn.Module]:
    return {key: load_student(p.work("students", key, "student.pt"))
            for key, s in p.students.items() if s.condition == condition}


def evaluate(p: Params) -> dict:
    """Score everything with the same feature space and sample counts:
    - comparison: real held-out floor, teacher, every student (FID/KID mean and spread over seeds,
      NFE, params, FLOPs per sample, images/s);
    - sweep: FID of each GET against inference iterations, per solver, with its residuals;
    - training: FID of each student's EMA snapshots against training step."""
    ds = load_data(p)
    space = feature_space(p)
    reference = np.load(p.work("features", "reference.npy"))
    device = device_of(p.evaluate.device)
    e = p.evaluate
    n = e.num_samples
    seeds = tuple(range(e.seeds))
    rows, sweep, curve, models = [], [], [], {}
    with tempfile.TemporaryDirectory(dir=_mkdir(p.work("evaluate"))) as tmp:
        tmp = Path(tmp)
        for i, condition in enumerate(p.conditions):
            teacher, _ = load_teacher_of(p, condition)
            students = students_of(p, condition)
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
    folder = p.results("evaluation")
    write_results(rows, folder, "comparison", "One-step students against the teacher", note)
    if sweep:
        write_results(sweep, folder, "iterations", "FID against inference iterations (test-time compute)",
                      note)
    if curve:
        write_results(curve, folder, "training", "FID against training steps (EMA snapshots, the first evaluation seed range)",
                      note)
    metrics = {re.sub(r"[^a-z0-9-]+", "_", r["source"].lower()).strip("_"):   # 'teacher (uncond)' -> teacher_uncond
               {"fid": r["fid"], "fid_std": r["fid_std"], "kid": r["kid"]} for r in rows}
    atomic_write_json(p.results("metrics.json"), {"features": space.name, "num_samples": n, **metrics})
    return {"comparison": rows, "iterations": sweep, "training": curve}



# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------

def make_figures(p: Params) -> list[Path]:
    """The paper's story for this profile, in results/<profile>/: the tables (tables/*.md, .csv,
    .json) and the figures (figures/*.png), from the evaluation's results and the trained models."""
    comparison = _read_json(p.results("evaluation", "comparison.json"))
    written = _tables(p, comparison)
    written += _sample_figures(p)
    written += _curve_figures(p, comparison)
    return written


# The tables ---------------------------------------------------------------------------------------

def _tables(p: Params, comparison: list[dict]) -> list[Path]:
    from getlib.paper import REPORTED

    folder = p.results("tables")
    features = comparison[0]["features"]
    note = (f"Measured here: FID/KID in the {features} feature space, {p.evaluate.num_samples} images per source, "
            f"mean and spread over {p.evaluate.seeds} seed ranges; images/s on this machine "
            f"({device_of(p.evaluate.device).type}). IS: Inception Score (10 splits), only with Inception features.")
    one_step = [{"source": r["source"], "kind": r["kind"], "condition": r["condition"], "nfe": r["nfe"],
                 "fid": r["fid"], "fid_std": r["fid_std"], "kid": r["kid"], "is": r.get("is"), "params": r.get("params"),
                 "gflops_per_sample": r.get("gflops_per_sample"), "images_per_s": r.get("images_per_s"),
                 "result": "measured"} for r in comparison]
    if p.data.dataset == "cifar10":   # the paper's own numbers, as separate rows
        note += " Rows marked 'reported' are the paper's CIFAR-10 numbers (pytorch-gan-metrics FID), not ours."
        for condition in p.conditions:
            one_step += [{"source": name, "kind": "reported", "condition": condition, "nfe": nfe, "fid": fid,
                          "fid_std": None, "kid": None, "is": inception_score, "params": None if m is None else int(m * 1e6),
                          "gflops_per_sample": None, "images_per_s": None, "result": "reported"}
                         for name, _, m, fid, inception_score, nfe in REPORTED[condition]]
    if all(r["is"] is None for r in one_step):   # no Inception features, no reported rows: no IS column
        one_step = [{k: v for k, v in r.items() if k != "is"} for r in one_step]
    write_results(one_step, folder, "one_step", "One-step generation against the teacher", note)

    pairs = []   # GET against ViTs of the same condition: the closest in size, and the one closest to 5x
    students = [r for r in comparison if r["kind"] in ("GET", "ViT")]
    for get in (r for r in students if r["kind"] == "GET"):
        vits = [r for r in students if r["kind"] == "ViT" and r["condition"] == get["condition"]]
        for relation, target in (("matched size", 1.0), ("~5x size", 5.0)):
            if not vits:
                continue
            vit = min(vits, key=lambda v: abs(math.log(v["params"] / get["params"] / target)))
            if relation == "~5x size" and abs(math.log(vit["params"] / get["params"] / 5)) > math.log(2):
                continue   # no ViT within 2.5x..10x of this GET in the profile
            pairs.append({"get": get["source"], "get_params": get["params"], "get_fid": get["fid"],
                          "get_train_pflops": get["train_pflops"], "vit": vit["source"], "relation": relation,
                          "vit_params": vit["params"], "vit_fid": vit["fid"], "vit_train_pflops": vit["train_pflops"],
                          "params_ratio": vit["params"] / get["params"], "fid_ratio": get["fid"] / vit["fid"],
                          "sampling_gflops_ratio": vit["gflops_per_sample"] / get["gflops_per_sample"]})
    write_results(pairs, folder, "get_vs_vit", "GET against ViTs: FID at matched and at ~5x parameters",
                  note + " Training compute: FLOPs of one training step per image x steps x batch.")

    bench = []
    for r in students:
        teacher = next(t for t in comparison if t["kind"] == "teacher" and t["condition"] == r["condition"])
        manifest = read_manifest(p.work("pairs", r["condition"]), verify=False)
        bench.append({"student": r["source"], "model": r["model"], "images_per_s": r["images_per_s"],
                      "teacher_images_per_s": teacher["images_per_s"],
                      "speedup_vs_teacher": r["images_per_s"] / teacher["images_per_s"],
                      "train_activations_kib_per_image": r["activations_kib_per_image"],
                      "memory_efficient_kib_per_image": r.get("activations_kib_per_image_memory_efficient"),
                      "bytes_per_pair": manifest["bytes_per_pair"],
                      "bytes_per_pair_released_format": manifest["bytes_per_pair"] / manifest["bytes_per_pair_vs_released"]})
    write_results(bench, folder, "benchmarks", "Sampling speed, training memory and pair storage",
                  "Same machine, same run. Training memory: activations autograd keeps for backward in one step "
                  "(per image), plain against the DEQ's memory-efficient (checkpointed) mode. Pair storage: "
                  "ours (latents regenerated from seeds) against the authors' released format.")
    return [folder / f"{name}.md" for name in ("one_step", "get_vs_vit", "benchmarks")]


# The figures --------------------------------------------------------------------------------------

def _grid_seeds(p: Params, shape: tuple[int, ...], classes: int | None, n: int) -> tuple[list[int], int | None]:
    """Evaluation seeds (latents no student was trained on); class-conditional: `n // classes`
    seeds per class, in class order."""
    from getlib.edm import latents_for_seeds
    first = p.evaluate.seed_start
    if not classes:
        return list(range(first, first + n)), None
    _, labels = latents_for_seeds(range(first, first + 40 * n), shape, classes)
    per = max(1, n // classes)
    return [first + s for c in range(classes) for s in (labels == c).nonzero().flatten()[:per].tolist()], per


def _sample_figures(p: Params) -> list[Path]:
    from getlib.edm import edm_sampler, latents_for_seeds
    from getlib.evaluate import sample_teacher
    from getlib.figures import image_rows, sample_panels

    ds = load_data(p)
    device = device_of(p.evaluate.device)
    written = []
    for condition in p.conditions:
        classes = ds.num_classes if condition == "cond" else None
        seeds, per = _grid_seeds(p, ds.shape, classes, p.figures.grid_samples)
        teacher, _ = load_teacher_of(p, condition)
        teacher = teacher.to(device)
        students = students_of(p, condition)
        # the same seeds, so the same latents (and labels), through the teacher and every student
        panels = {f"teacher ({p.sampler.nfe} NFE)": torch.cat([
            sample_teacher(teacher, 1, ds.shape, classes, s, 1, p.sampler, device) for s in seeds])}
        for key, model in students.items():
            panels[f"{key}: {p.students[key].model} (1 step)"] = torch.cat(
                [sample_student(model, 1, s, 1, device)[0] for s in seeds])
        panels = {k: v.float() / 127.5 - 1 for k, v in panels.items()}
        written.append(sample_panels(panels, p.results("figures", f"samples-{condition}.png"), nrow=per or None,
                                     title=f"{condition}: the same latents through the teacher and each student"
                                     + (" (one row per class)" if classes else "")))
        # spherical interpolation between two latents (one label, for conditional models)
        (e0, e1), labels = latents_for_seeds(seeds[:2], ds.shape, classes)
        t = torch.linspace(0, 1, 9)
        latents = _slerp(e0, e1, t)
        y = None if labels is None else labels[:1].expand(len(t)).to(device)
        rows = {f"teacher ({p.sampler.nfe} NFE)": edm_sampler(teacher, latents.to(device), y,
                                                             **dataclasses.asdict(p.sampler)).float().cpu()}
        for key, model in students.items():
            kw = {"z0": torch.randn(1, model.grid ** 2, model.hidden_size, generator=torch.Generator().manual_seed(0)
                                    ).expand(len(t), -1, -1).to(device)} if isinstance(model, GET) else {}
            with torch.no_grad():
                rows[f"{key} (1 step)"] = model.to(device).eval()(latents.to(device), y, **kw).float().cpu()
        written.append(image_rows(rows, p.results("figures", f"interpolation-{condition}.png"),
                                  f"{condition}: spherical interpolation between two latents (left to right)"))
    return written


def _slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between latents a and b at fractions t: (len(t), *a.shape)."""
    cos = (a.flatten() @ b.flatten()) / (a.norm() * b.norm())
    theta = torch.arccos(cos.clamp(-1, 1))
    w0 = torch.sin((1 - t) * theta) / torch.sin(theta)
    w1 = torch.sin(t * theta) / torch.sin(theta)
    return w0.view(-1, *[1] * a.ndim) * a + w1.view(-1, *[1] * a.ndim) * b


def _curve_figures(p: Params, comparison: list[dict]) -> list[Path]:
    from getlib.figures import bar_panels, iterations_plot, line_plot, scatter_plot

    features = comparison[0]["features"]
    floors = {r["source"]: r["fid"] for r in comparison if r["kind"] in ("real", "teacher")}
    written = []
    loss = {}
    for key in p.students:
        log = _read_csv(p.results("train", f"{key}.csv"))
        loss[key] = ([int(r["step"]) for r in log], [float(r["loss"]) for r in log])
    written.append(line_plot(loss, p.results("figures", "training_loss.png"), "training step",
                             "distillation loss (L1, summed over supervised states)", "Training loss", logy=True))
    curve = _read_json(p.results("evaluation", "training.json"))
    if curve:
        rows = {r["source"]: r for r in comparison}
        keys = list(dict.fromkeys(r["student"] for r in curve))
        steps = {k: [r["step"] for r in curve if r["student"] == k] for k in keys}
        fids = {k: [r["fid"] for r in curve if r["student"] == k] for k in keys}
        written.append(line_plot({k: (steps[k], fids[k]) for k in keys}, p.results("figures", "fid_vs_steps.png"),
                                 "training step", f"FID ({features})", "FID against training iterations",
                                 logy=True, hlines=floors))
        per_image = {k: rows[k]["train_gflops_per_image"] * p.train_config(k).batch_size / 1e6 for k in keys}
        written.append(line_plot({k: ([s * per_image[k] for s in steps[k]], fids[k]) for k in keys},
                                 p.results("figures", "fid_vs_training_flops.png"), "training compute (PFLOPs)",
                                 f"FID ({features})", "FID against training compute", logy=True, logx=True,
                                 hlines=floors))
    students = [r for r in comparison if r["kind"] in ("GET", "ViT")]
    groups = {}   # one family per model kind and condition
    for condition in p.conditions:
        for kind in ("GET", "ViT"):
            rows = [r for r in students if r["kind"] == kind and r["condition"] == condition]
            if rows:
                groups[f"{kind} ({condition})"] = ([r["params"] for r in rows], [r["fid"] for r in rows],
                                                   [r["source"] for r in rows])
    written.append(scatter_plot(groups, p.results("figures", "fid_vs_params.png"), "parameters", f"FID ({features})",
                                "FID against model size", hlines=floors))
    sweep = _read_json(p.results("evaluation", "iterations.json"))
    if sweep:
        written.append(iterations_plot(sweep, p.results("figures", "fid_vs_iterations.png"),
                                       "GET: FID and residual against inference iterations"))
    bench = _read_json(p.results("tables", "benchmarks.json"))
    speed = {r["source"]: r["images_per_s"] for r in comparison if r.get("images_per_s")}
    memory = {}
    for r in bench:
        memory[f"{r['student']} plain"] = r["train_activations_kib_per_image"]
        if r["memory_efficient_kib_per_image"] is not None:
            memory[f"{r['student']} memory-efficient"] = r["memory_efficient_kib_per_image"]
    written.append(bar_panels({"sampling speed (images/s, this machine)": speed,
                               "training activations (KiB per image)": memory},
                              p.results("figures", "speed_and_memory.png"), "Speed and memory"))
    return written


def _write_csv(rows: list[dict], path: Path) -> None:
    import csv
    import io
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def _read_json(path: Path) -> list:
    return json.loads(path.read_text()) if path.exists() else []


def _read_csv(path: Path) -> list[dict]:
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
