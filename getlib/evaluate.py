"""Evaluation: image sets from the teacher and the students, their scores, and cost (FLOPs, speed,
memory). The scores themselves (FID, KID, IS in a feature space) are `getlib.metrics`.

Sampling is seeded per image: image i of a set has seed offset + i, which fixes its latent and
label (`edm.latents_for_seeds`) and, for GET, its initial state z0 (`models.z0_for_keys`), so a set
does not depend on the batch size or device.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from getlib.edm import Denoiser, SamplerConfig, latents_for_seeds, sample_teacher
from getlib.images import to_uint8
from getlib.metrics import FeatureSpace, score_images
from getlib.models import GET

__all__ = ["sample_student", "iteration_sweep", "DECODING_RULES", "decoding_rule", "decoding_rules",
           "fixed_point_diagnostics", "deq_analysis", "scores_over_seeds", "compare", "flops_per_sample", "training_cost",
           "attention_share", "throughput"]

# Which iterate of a GET's sampling solve is decoded (DEQConfig overrides). 'abs' is the paper's rule.
DECODING_RULES: dict[str, dict] = {
    "abs": {"f_stop_mode": "abs", "return_final": False},    # the lowest absolute residual ||f(z) - z||
    "rel": {"f_stop_mode": "rel", "return_final": False},    # the lowest relative residual ||f(z) - z|| / ||f(z)||
    "last": {"return_final": True},                          # the last iterate
}


# ------------------------------------------------------------------------------------------------
# Samples
# ------------------------------------------------------------------------------------------------

@torch.no_grad()
def sample_student(model: nn.Module, n: int, seed_offset: int = 0, batch_size: int = 500,
                   device: torch.device | str = "cpu", **deq_overrides: object) -> tuple[Tensor, dict]:
    """n images (uint8, (n, C, H, W)) from a student in eval mode, and GET's solver statistics
    (mean absolute / relative residual of the returned iterates, per-iteration relative residuals)."""
    model = model.to(device).eval()
    shape = (model.in_channels, model.input_size, model.input_size)
    out, abs_res, rel_res, traces = [], [], [], []
    for lo in range(0, n, batch_size):
        seeds = range(seed_offset + lo, seed_offset + min(n, lo + batch_size))
        latents, labels = latents_for_seeds(seeds, shape, model.num_classes if model.cond else None)
        labels = None if labels is None else labels.to(device)
        if isinstance(model, GET):
            images, stats = model(latents.to(device), labels, z0=model.initial_states(seeds).to(device),
                                  return_stats=True, **deq_overrides)
            abs_res.append(stats.abs_lowest.cpu())
            rel_res.append(stats.rel_lowest.cpu())
            traces.append(stats.rel_trace.cpu())
        else:
            images = model(latents.to(device), labels)
        out.append(to_uint8(images.float().cpu()))
    stats = {}
    if abs_res:
        trace = torch.cat(traces, dim=1).mean(1) if all(t.shape[0] == traces[0].shape[0] for t in traces) else None
        stats = {"abs_residual": torch.cat(abs_res).mean().item(), "rel_residual": torch.cat(rel_res).mean().item(),
                 "rel_residual_per_iteration": [] if trace is None else trace.tolist()}
    return torch.cat(out), stats


def iteration_sweep(model: GET, reference: np.ndarray, space: FeatureSpace, workdir: str | Path, n: int,
                    iterations: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12),
                    solvers: tuple[str, ...] = ("fixed_point_iter", "anderson"), seed_offset: int = 0,
                    batch_size: int = 500, device: torch.device | str = "cpu") -> list[dict]:
    """FID against test-time compute: the same n seeds sampled with k solver iterations per solver
    (tolerance 0, so exactly k evaluations of f), with the solver's mean relative residual."""
    rows = []
    for solver in solvers:
        for k in iterations:
            images, stats = sample_student(model, n, seed_offset, batch_size, device, eval_f_solver=solver,
                                           eval_f_max_iter=k, eval_f_tol=0.0)
            scores = score_images(images, reference, space, Path(workdir) / f"{solver}-{k}")
            rows.append({"solver": solver, "iterations": k, **scores, "rel_residual": stats["rel_residual"],
                         "abs_residual": stats["abs_residual"]})
    return rows


def decoding_rule(model: GET) -> str:
    """The name of the decoding rule a GET samples with (its recipe's)."""
    return "last" if model.deq_cfg.return_final else model.deq_cfg.f_stop_mode


def scores_over_seeds(make: Callable[[int], Tensor], reference: np.ndarray, space: FeatureSpace,
                      workdir: str | Path, n: int, seeds: tuple[int, ...], seed_start: int) -> dict:
    """FID/KID (and IS where the space has it) of `make(offset)`'s n images for each seed range
    (offset seed_start + k n): the mean and the sample standard deviation (n - 1) over the ranges."""
    scores = [score_images(make(seed_start + seed * n), reference, space, Path(workdir) / f"seed{seed}",
                           inception_score_too=True) for seed in seeds]
    fids, kids = [s["fid"] for s in scores], [s["kid"] for s in scores]
    row = {"fid": float(np.mean(fids)), "fid_std": float(np.std(fids, ddof=1)) if len(fids) > 1 else 0.0, "kid": float(np.mean(kids)), "n": n,
           "n_reference": len(reference), "seeds": len(seeds)}
    if "is" in scores[0]:
        row["is"] = float(np.mean([s["is"] for s in scores]))
    return row


def decoding_rules(model: GET, reference: np.ndarray, space: FeatureSpace, workdir: str | Path, n: int,
                   seeds: tuple[int, ...], seed_start: int, batch_size: int = 500,
                   device: torch.device | str = "cpu") -> list[dict]:
    """The same samples (seeds, z0, iterations) decoded under each rule of DECODING_RULES, scored
    over the seed ranges; `own` marks the rule the model's recipe samples with."""
    rows = []
    for rule, overrides in DECODING_RULES.items():
        make = lambda off: sample_student(model, n, off, batch_size, device, **overrides)[0]  # noqa: E731
        rows.append({"rule": rule, "own": rule == decoding_rule(model), "iterations": model.deq_cfg.eval_f_max_iter,
                     **scores_over_seeds(make, reference, space, Path(workdir) / rule, n, seeds, seed_start)})
    return rows


@torch.no_grad()
def fixed_point_diagnostics(model: GET, reference: np.ndarray, space: FeatureSpace, workdir: str | Path, n: int,
                            num_iter: int = 12, seed_offset: int = 0, batch_size: int = 500,
                            device: torch.device | str = "cpu") -> list[dict]:
    """Does the learned map converge? For the plain iterates z_k = f^k(z0) of n samples, per
    k = 1..num_iter: the state's norm ||z_k||, the absolute residual ||f(z_k) - z_k||, the relative one
    (divided by ||f(z_k)||), cos(z_k, f(z_k)) (sample means), and the FID of decoding z_k itself."""
    model = model.to(device).eval()
    shape = (model.in_channels, model.input_size, model.input_size)
    sums = torch.zeros(num_iter, 4, dtype=torch.float64)
    images: list[list[Tensor]] = [[] for _ in range(num_iter)]
    for lo in range(0, n, batch_size):
        seeds = range(seed_offset + lo, seed_offset + min(n, lo + batch_size))
        latents, labels = latents_for_seeds(seeds, shape, model.num_classes if model.cond else None)
        states = model.iterates(latents.to(device), None if labels is None else labels.to(device),
                                model.initial_states(seeds).to(device), num_iter + 1)
        for k in range(1, num_iter + 1):
            z, fz = states[k].flatten(1).float(), states[k + 1].flatten(1).float()
            diff = (fz - z).norm(dim=1)
            sums[k - 1] += torch.stack([z.norm(dim=1).sum(), diff.sum(), (diff / (fz.norm(dim=1) + 1e-9)).sum(),
                                        F.cosine_similarity(z, fz, dim=1).sum()]).double().cpu()
            images[k - 1].append(to_uint8(model.decode(states[k]).float().cpu()))
    rows = []
    for k in range(1, num_iter + 1):
        norm, abs_res, rel_res, cos = (sums[k - 1] / n).tolist()
        s = score_images(torch.cat(images[k - 1]), reference, space, Path(workdir) / f"iterate-{k}")
        rows.append({"iteration": k, "state_norm": norm, "abs_residual": abs_res, "rel_residual": rel_res,
                     "cos_next": cos, "fid": s["fid"], "n": s["n"], "features": s["features"]})
    return rows


def deq_analysis(model: GET, reference: np.ndarray, space: FeatureSpace, workdir: str | Path, n: int,
                 seeds: tuple[int, ...], seed_start: int, iterations: tuple[int, ...], solvers: tuple[str, ...],
                 batch_size: int = 500, device: torch.device | str = "cpu") -> dict[str, list[dict]]:
    """What only a GET has, measured on the same evaluation seeds: FID against inference iterations
    per solver (`iteration_sweep`), under each decoding rule (`decoding_rules`), and the fixed-point
    diagnostics of its plain iterates up to the largest iteration count (`fixed_point_diagnostics`)."""
    workdir = Path(workdir)
    return {"iterations": iteration_sweep(model, reference, space, workdir / "sweep", n, iterations, solvers,
                                          seed_start, batch_size, device),
            "decoding": decoding_rules(model, reference, space, workdir / "rules", n, seeds, seed_start, batch_size,
                                       device),
            "fixed_point": fixed_point_diagnostics(model, reference, space, workdir / "iterates", n, max(iterations),
                                                   seed_start, batch_size, device)}


def compare(students: dict[str, nn.Module], teacher: Denoiser | None, reference: np.ndarray,
            held_out: Tensor | None, space: FeatureSpace, workdir: str | Path, n: int,
            seeds: tuple[int, ...] = (0, 1, 2), teacher_shape: tuple[int, int, int] | None = None,
            num_classes: int | None = None, sampler: SamplerConfig = SamplerConfig(), batch_size: int = 500,
            device: torch.device | str = "cpu", seed_start: int = 0) -> list[dict]:
    """One row per image source, all scored with n images against the same reference features:
    the real held-out floor (uint8 `held_out`, its first n images), the teacher, then every student;
    generated sources are sampled with `len(seeds)` disjoint seed ranges (range k: seed_start + k n
    onwards; keep them apart from the training pairs' seeds) and reported as the mean and standard
    deviation over them."""
    workdir = Path(workdir)
    rows = []
    if held_out is not None:
        floor = score_images(held_out[:n], reference, space, workdir / "real-held-out", inception_score_too=True)
        rows.append({"source": "real (held-out)", "nfe": 0, "fid": floor["fid"], "fid_std": 0.0,
                     "kid": floor["kid"], "n": floor["n"], "n_reference": floor["n_reference"],
                     **({"is": floor["is"]} if "is" in floor else {})})

    def spread(name: str, nfe: int, make: Callable[[int], Tensor]) -> dict:
        return {"source": name, "nfe": nfe, **scores_over_seeds(make, reference, space, workdir / name.replace("/", "_"),
                                                                n, seeds, seed_start)}

    if teacher is not None:
        make = lambda off, count=n: sample_teacher(  # noqa: E731
            teacher, count, teacher_shape, num_classes, off, batch_size, sampler, device)
        row = spread("teacher", sampler.nfe, make)
        labels = torch.zeros(1, dtype=torch.long) if num_classes else None
        one_call = flops_per_sample(teacher, torch.zeros(1, *teacher_shape, device=device),
                                    torch.tensor(1.0, device=device), labels)
        rows.append({**row, "params": sum(p.numel() for p in teacher.parameters()) if isinstance(teacher, nn.Module)
                     else None, "gflops_per_sample": one_call * sampler.nfe / 1e9,
                     **throughput(lambda: make(seed_start, batch_size), batch_size, device=device)})
    for name, model in students.items():
        nfe = model.deq_cfg.eval_f_max_iter if isinstance(model, GET) else 1
        make = lambda off, count=n, m=model: sample_student(m, count, off, batch_size, device)[0]  # noqa: E731
        row = spread(name, nfe, make)
        example = torch.zeros(1, model.in_channels, model.input_size, model.input_size, device=device)
        labels = torch.zeros(1, dtype=torch.long, device=device) if model.cond else None
        rows.append({**row, "params": sum(p.numel() for p in model.parameters()),
                     "gflops_per_sample": flops_per_sample(model.eval(), example, labels) / 1e9,
                     **throughput(lambda: make(seed_start, batch_size), batch_size, device=device)})
    for r in rows:
        r["features"] = space.name
    return rows


# ------------------------------------------------------------------------------------------------
# Cost
# ------------------------------------------------------------------------------------------------

def _flop_counter():
    """torch's FlopCounterMode (matrix products, convolutions, attention: 2 FLOPs per multiply-add;
    elementwise work is not counted), taught the CPU's fused attention, which torch has no formula for."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: forward,
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: backward})


@torch.no_grad()
def flops_per_sample(model: nn.Module | Callable[[Tensor], Tensor], example: Tensor, *args: object,
                     **kwargs: object) -> int:
    """FLOPs of one call on `example` (batch of 1), counted as `_flop_counter` counts."""
    counter = _flop_counter()
    with counter:
        model(example, *args, **kwargs)
    return int(counter.get_total_flops())


def training_cost(student: nn.Module, loss: str = "l1", gamma: float = 0.8) -> dict:
    """One training step of a model built like `student` (its own DEQ recipe), on one image on the
    CPU (so the count does not depend on where evaluation ran): FLOPs of forward + backward
    (`_flop_counter`) and the activation memory autograd keeps for backward (KiB); for GET also
    that memory in the memory-efficient (checkpointed) mode."""
    import copy

    from getlib.deq import LOSSES, fp_correction

    def one_step(model: nn.Module) -> tuple[int, float]:
        model = model.train().requires_grad_(True)
        x = torch.zeros(1, model.in_channels, model.input_size, model.input_size)
        labels = torch.zeros(1, dtype=torch.long) if model.cond else None
        saved = [0]

        def pack(t: Tensor) -> Tensor:
            if not isinstance(t, nn.Parameter):
                saved[0] += t.numel() * t.element_size()
            return t

        counter = _flop_counter()
        with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x, labels)
            preds = out if isinstance(out, list) else [out]
            total, _ = fp_correction(LOSSES[loss], preds, torch.zeros_like(x), gamma)
            total.backward()
        return int(counter.get_total_flops()), saved[0] / 1024

    flops, kib = one_step(copy.deepcopy(student).cpu())
    cost = {"train_gflops_per_image": flops / 1e9, "activations_kib_per_image": kib}
    if isinstance(student, GET):
        efficient = copy.deepcopy(student).cpu()
        efficient.deq_cfg = efficient.deq_cfg.replace(memory_efficient=True)
        cost["activations_kib_per_image_memory_efficient"] = one_step(efficient)[1]
    return cost


def attention_share(model: nn.Module, training: bool = False, **deq_overrides: object) -> dict:
    """How much of `model`'s FLOPs per sample, at its own input size, attention itself takes: the
    score and value products (QK^T and AV, in SDPA) over everything `_flop_counter` counts. Eval
    mode: one sampling call (as `flops_per_sample`; `deq_overrides` go to a GET's solve); with
    `training`: one training step's forward and backward (as `training_cost`), where torch's SDPA
    backward formula costs 2.5x its forward. Returns {flops, attention_flops, attention_share}."""
    import copy

    from getlib.deq import LOSSES, fp_correction

    model = copy.deepcopy(model).cpu().train(training).requires_grad_(training)
    x = torch.zeros(1, model.in_channels, model.input_size, model.input_size)
    labels = torch.zeros(1, dtype=torch.long) if model.cond else None
    counter = _flop_counter()
    with counter, torch.set_grad_enabled(training):
        out = model(x, labels, **(deq_overrides if isinstance(model, GET) else {}))
        if training:
            total, _ = fp_correction(LOSSES["l1"], out if isinstance(out, list) else [out], torch.zeros_like(x), 0.8)
            total.backward()
    counts = counter.get_flop_counts()["Global"]
    flops = int(sum(counts.values()))
    attention = int(sum(v for op, v in counts.items() if "scaled_dot_product" in str(op)))
    return {"flops": flops, "attention_flops": attention, "attention_share": attention / flops if flops else 0.0}


def throughput(fn: Callable[[], object], batch: int, repeats: int = 3, device: torch.device | str = "cpu") -> dict:
    """Images per second of fn() producing `batch` images (median of `repeats` after one warm-up)
    and, on CUDA, its peak allocated memory (on CPU there is no per-call measure: None)."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else None
    return {"images_per_s": batch / float(np.median(times)), "peak_mib": peak}
