"""Stage figures: the paper's tables and figures for this profile, results/<profile>/tables, figures/.

They are written under `out` (results/<profile>/ when `publishing()`, else work/<profile>/unpublished/:
a notebook run by hand shows what the stage would publish and leaves results/ as it is); the
evaluation's results and the training logs they are drawn from are read from results/<profile>/."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from getlib.checkpoints import load_teacher_of
from getlib.config import Params, device_of
from getlib.data import Dataset
from getlib.edm import edm_sampler, latents_for_seeds, sample_teacher, seeds_by_class
from getlib.evaluate import sample_student
from getlib.claims import (PLATEAU_RULE, VERDICT_RULE, arm_curves, arm_rows, claims_rows, curves_by_tokens, plateau_rows,
                           token_counts, verdicts_by_tokens)
from getlib.figures import (band_panels, band_plot, bar_panels, benchmark_rows, fixed_point_plot, get_vs_vit_rows, image_rows,
                            iterations_plot, line_plot, one_step_rows, sample_panels, scatter_plot, slerp)
from getlib.io import read_csv, read_json, write_results
from getlib.models import GET, load_student
from getlib.notebook import publishing
from getlib.pairs import read_manifest
from getlib.paper import REPORTED
from getlib.records import read_record
from getlib.stages.data import load_data


def make_figures(p: Params) -> list[Path]:
    """The tables (tables/*.md, .csv, .json) from the evaluation's results, and the figures
    (figures/*.png) from those results and the trained models, under results/<profile>/ (or, when
    not `publishing()`, under work/<profile>/unpublished/); returns the files written."""
    comparison = read_json(p.results("evaluation", "comparison.json"))
    out = p.results() if publishing() else p.work("unpublished")
    ds = load_data(p)
    tokens = token_counts(sorted({r["model"] for r in comparison if r["kind"] in ("GET", "ViT")}), ds.shape[-1])
    return tables(p, comparison, tokens, out) + sample_figures(p, ds, out) + curve_figures(p, comparison, tokens, out)


def tables(p: Params, comparison: list[dict], tokens: dict[str, int], out: Path) -> list[Path]:
    folder = out / "tables"
    note = (f"Measured here: FID/KID in the {comparison[0]['features']} feature space, {p.evaluate.num_samples} "
            f"images per source, mean and spread over {p.evaluate.seeds} seed ranges; images/s on this machine "
            f"({device_of(p.evaluate.device).type}). IS: Inception Score (10 splits), only with Inception features.")
    reported = []
    if p.data.dataset == "cifar10":   # the paper's own numbers, as separate rows
        note += " Rows marked 'reported' are the paper's CIFAR-10 numbers (pytorch-gan-metrics FID), not ours."
        reported = [{"source": name, "kind": "reported", "condition": condition, "nfe": nfe, "fid": fid, "fid_std": None,
                     "kid": None, "is": inception_score, "params": None if m is None else int(m * 1e6),
                     "gflops_per_sample": None, "images_per_s": None, "result": "reported"}
                    for condition in p.conditions for name, _, m, fid, inception_score, nfe in REPORTED[condition]]
    write_results(one_step_rows(comparison, reported), folder, "one_step", "One-step generation against the teacher",
                  note)
    write_results(get_vs_vit_rows(comparison), folder, "get_vs_vit",
                  "GET against ViTs: FID at matched and at ~5x parameters",
                  note + " Training compute: FLOPs of one training step per image x steps x batch.")
    manifests = {c: read_manifest(p.work("pairs", c), verify=False) for c in p.conditions}
    write_results(benchmark_rows(comparison, manifests), folder, "benchmarks",
                  "Sampling speed, training memory and pair storage",
                  "Same machine, same run. Training memory: activations autograd keeps for backward in one step "
                  "(per image), plain against the DEQ's memory-efficient (checkpointed) mode. Pair storage: "
                  "ours (latents regenerated from seeds) against the authors' released format.")
    evaluation = {name: read_json(path) if (path := p.results("evaluation", f"{name}.json")).is_file() else []
                  for name in ("training", "iterations", "fixed_point", "decoding")}   # (written when rows exist)
    records = [read_record(p, key) for key in p.students]
    write_results(arm_rows(comparison, {r["student"]: r["run"]["device"] for r in records if r}), folder, "arms",
                  "Arms: the runs that differ only in their training seed, and the machines that made them",
                  "A run's machine is one more source of run-to-run variation, like its training seed: the runs "
                  "of an arm may come from several (their records, runs/*.json). FID: the mean over the arm's runs. "
                  + note)
    claims = claims_rows(comparison, evaluation["training"], evaluation["iterations"], evaluation["fixed_point"],
                         evaluation["decoding"], tokens)
    write_results(claims, folder, "claims", "The paper's claims against this profile's runs", VERDICT_RULE + " " + note)
    names = ["one_step", "get_vs_vit", "benchmarks", "arms", "claims"]
    if by_tokens := verdicts_by_tokens(claims, comparison):
        write_results(by_tokens, folder, "claims_by_tokens", "Does a claim's verdict change with the token count?",
                      "Each claim's verdict and difference (d, 2 se) at each token count, from tables/claims.md "
                      "(same rule, same pairs and feature network); 'open': not tested at every count. " + note)
        names.append("claims_by_tokens")
    else:   # (an earlier evaluation's table would describe arms this one does not have)
        for old in folder.glob("claims_by_tokens.*"):
            old.unlink()
    if plateaus := plateau_rows(comparison, evaluation["training"]):
        write_results(plateaus, folder, "plateaus", "Was each arm's FID still falling at the end of its runs?",
                      PLATEAU_RULE + " " + note)
        names.append("plateaus")
    else:   # (an earlier evaluation's table would describe runs this one does not have)
        for old in folder.glob("plateaus.*"):
            old.unlink()
    return [folder / f"{name}.md" for name in names]


def sample_figures(p: Params, ds: Dataset, out: Path) -> list[Path]:
    """Per condition: the same evaluation seeds (latents no student was trained on) through the
    teacher and every student (`ds`: the profile's data), and a spherical interpolation between the
    first two latents."""
    device = device_of(p.evaluate.device)
    written = []
    for condition in p.conditions:
        classes = ds.num_classes if condition == "cond" else None
        seeds, per = seeds_by_class(p.evaluate.seed_start, p.figures.grid_samples, ds.shape, classes)
        teacher = load_teacher_of(p, condition)[0].to(device)
        # the runs that are here (an interim evaluation takes some students' rows from records only)
        students = {key: load_student(path) for key, path in p.student_files(condition).items() if path.is_file()}
        panels = {f"teacher ({p.sampler.nfe} NFE)": torch.cat([
            sample_teacher(teacher, 1, ds.shape, classes, s, 1, p.sampler, device) for s in seeds])}
        for key, model in students.items():
            panels[f"{key}: {p.students[key].model} (1 step)"] = torch.cat(
                [sample_student(model, 1, s, 1, device)[0] for s in seeds])
        panels = {k: v.float() / 127.5 - 1 for k, v in panels.items()}
        written.append(sample_panels(panels, Path(out, "figures", f"samples-{condition}.png"), nrow=per or None,
                                     title=f"{condition}: the same latents through the teacher and each student"
                                     + (" (one row per class)" if classes else "")))
        # one label and one z0 (the first seed's) along the row: only the latent moves
        (e0, e1), labels = latents_for_seeds(seeds[:2], ds.shape, classes)
        t = torch.linspace(0, 1, 9)
        latents = slerp(e0, e1, t).to(device)
        y = None if labels is None else labels[:1].expand(len(t)).to(device)
        rows = {f"teacher ({p.sampler.nfe} NFE)": edm_sampler(teacher, latents, y,
                                                             **dataclasses.asdict(p.sampler)).float().cpu()}
        for key, model in students.items():
            kw = {"z0": model.initial_states(seeds[:1]).expand(len(t), -1, -1).to(device)} if isinstance(model, GET) else {}
            with torch.no_grad():
                rows[f"{key} (1 step)"] = model.to(device).eval()(latents, y, **kw).float().cpu()
        written.append(image_rows(rows, Path(out, "figures", f"interpolation-{condition}.png"),
                                  f"{condition}: spherical interpolation between two latents (left to right)"))
    return written


def curve_figures(p: Params, comparison: list[dict], tokens: dict[str, int], out: Path) -> list[Path]:
    """Training loss, FID against steps (and, with several token counts, per arm at each count) and
    training compute, FID against size and against inference iterations, speed and memory."""
    features = comparison[0]["features"]
    floors = {r["source"]: r["fid"] for r in comparison if r["kind"] in ("real", "teacher")}
    loss = {}
    for key in p.students:
        log = read_csv(p.results("train", f"{key}.csv"))
        loss[key] = ([int(r["step"]) for r in log], [float(r["loss"]) for r in log])
    written = [line_plot(loss, Path(out, "figures", "training_loss.png"), "training step",
                         "distillation loss (L1, summed over supervised states)", "Training loss", logy=True)]
    curve = read_json(p.results("evaluation", "training.json"))
    by_arm = Path(out, "figures", "fid_vs_steps_by_arm.png")
    by_tokens = Path(out, "figures", "fid_vs_steps_by_tokens.png")
    for old in (by_arm, by_tokens):   # (an earlier evaluation's, drawn again below if its arms are still here)
        old.unlink(missing_ok=True)
    if curve:
        rows = {r["source"]: r for r in comparison}
        keys = list(dict.fromkeys(r["student"] for r in curve))
        steps = {k: [r["step"] for r in curve if r["student"] == k] for k in keys}
        fids = {k: [r["fid"] for r in curve if r["student"] == k] for k in keys}
        written.append(line_plot({k: (steps[k], fids[k]) for k in keys}, Path(out, "figures", "fid_vs_steps.png"),
                                 "training step", f"FID ({features})", "FID against training iterations",
                                 logy=True, hlines=floors))
        if arms := arm_curves(comparison, curve):
            written.append(band_plot(arms, by_arm, "training step", f"FID ({features})",
                                     "FID against training steps: arms with several training seeds (mean, 2 se)",
                                     logy=True, hlines=floors))
        if len(panels := curves_by_tokens(comparison, curve, tokens)) > 1:
            written.append(band_panels({f"{n} tokens per image": c for n, c in panels.items()}, by_tokens,
                                       "training step", f"FID ({features})",
                                       "FID against training steps per arm and token count (mean over training "
                                       "seeds, 2 se)", logy=True, hlines=floors))
        per_step = {k: rows[k]["train_gflops_per_image"] * p.train_config(k).batch_size / 1e6 for k in keys}
        written.append(line_plot({k: ([s * per_step[k] for s in steps[k]], fids[k]) for k in keys},
                                 Path(out, "figures", "fid_vs_training_flops.png"), "training compute (PFLOPs)",
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
    written.append(scatter_plot(groups, Path(out, "figures", "fid_vs_params.png"), "parameters", f"FID ({features})",
                                "FID against model size", hlines=floors))
    sweep = read_json(p.results("evaluation", "iterations.json"))
    if sweep:
        written.append(iterations_plot(sweep, Path(out, "figures", "fid_vs_iterations.png"),
                                       "GET: FID and residual against inference iterations"))
    diagnostics = read_json(p.results("evaluation", "fixed_point.json"))
    if diagnostics:
        written.append(fixed_point_plot(diagnostics, Path(out, "figures", "fixed_point.png"),
                                        "GET's plain iterates z_k = f^k(z0): does the map converge?"))
    speed = {r["source"]: r["images_per_s"] for r in comparison if r.get("images_per_s")}
    memory = {}
    for r in read_json(out / "tables" / "benchmarks.json"):
        memory[f"{r['student']} plain"] = r["train_activations_kib_per_image"]
        if r["memory_efficient_kib_per_image"] is not None:
            memory[f"{r['student']} memory-efficient"] = r["memory_efficient_kib_per_image"]
    written.append(bar_panels({"sampling speed (images/s, this machine)": speed,
                               "training activations (KiB per image)": memory},
                              Path(out, "figures", "speed_and_memory.png"), "Speed and memory"))
    return written
