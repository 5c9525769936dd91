"""Evaluation: samples, FID/KID through clean-fid, Inception Score, and cost (FLOPs, speed, memory).

Every image set goes the same way: uint8 PNGs in a folder -> clean-fid's `get_folder_features`
with a feature extractor -> clean-fid's `fid_from_feats` / `kernel_distance`. Only the feature space
changes: Inception ('clean' or 'legacy_tensorflow' mode) for CIFAR-10, or the digits classifier
(`getlib.features`) offline. Each result names its feature space and sample counts.

Sampling is seeded per image: image i of a set uses seed offset + i for its latent (and label) and,
for GET, for its initial state z0, so a set does not depend on the batch size or device.
"""
from __future__ import annotations

import csv
import io
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from getlib.data import to_uint8
from getlib.edm import Denoiser, SamplerConfig, edm_sampler, latents_for_seeds
from getlib.features import FeatureNet
from getlib.io import atomic_write, atomic_write_json
from getlib.models import GET

__all__ = ["FeatureSpace", "digits_feature_space", "inception_feature_space", "INCEPTION_PATH", "INCEPTION_URL",
           "sample_student", "sample_teacher", "write_images", "folder_features", "fid_kid", "score_images",
           "iteration_sweep", "compare", "cifar10_reference", "inception_score",
           "flops_per_sample", "training_cost", "throughput", "write_results"]

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_PATH = Path("/tmp/inception-2015-12-05.pt")   # where clean-fid looks for (and downloads) it


# ------------------------------------------------------------------------------------------------
# Feature spaces
# ------------------------------------------------------------------------------------------------

@dataclass
class FeatureSpace:
    """How clean-fid turns images into features: its mode, the extractor and the resize it uses."""
    name: str
    extractor: Callable[[Tensor], Tensor]          # float (B, 3, H, W) in [0, 255] -> (B, d)
    mode: str = "clean"
    resize: Callable[[np.ndarray], np.ndarray] | None = None   # None: clean-fid's own for `mode`
    device: torch.device = torch.device("cpu")
    class_probabilities: Callable[[Tensor], Tensor] | None = None   # for the Inception Score


def digits_feature_space(net: FeatureNet, device: torch.device | str = "cpu", name: str = "digits-cnn") -> FeatureSpace:
    """A classifier's (getlib.features) 128-d penultimate layer; images keep their size (no resize)."""
    net = net.to(device).eval()
    return FeatureSpace(name=name, device=torch.device(device),
                        extractor=lambda x: net.features(net.prepare(x)),
                        resize=lambda img: np.asarray(img, dtype=np.uint8))


def inception_feature_space(mode: str = "clean", device: torch.device | str = "cpu") -> FeatureSpace:
    """clean-fid's Inception (the TF-FID torchscript network) in 'clean' or 'legacy_tensorflow' mode.

    The weights are read from /tmp/inception-2015-12-05.pt, downloaded there if missing; when that
    fails this says so and where to put the file: there is no silent fallback.
    """
    if mode not in ("clean", "legacy_tensorflow"):
        raise ValueError(f"Inception FID mode must be 'clean' or 'legacy_tensorflow', got {mode!r}")
    if not INCEPTION_PATH.exists():
        from cleanfid.downloads_helper import check_download_inception
        try:
            check_download_inception(fpath=str(INCEPTION_PATH.parent))
        except Exception as e:  # offline: URLError at once
            INCEPTION_PATH.unlink(missing_ok=True)  # no half-written file left behind
            raise RuntimeError(
                f"Inception weights are not available: downloading {INCEPTION_URL} failed "
                f"({type(e).__name__}: {e}). Download that file on a machine with internet access and put it "
                f"at {INCEPTION_PATH}; Inception FID is not computed without it.") from e
    from cleanfid.inception_torchscript import InceptionV3W
    device = torch.device(device)
    # 'legacy_tensorflow' resizes inside the network, 'clean' in clean-fid's data loader (PIL bicubic)
    net = InceptionV3W(str(INCEPTION_PATH.parent), download=False,
                       resize_inside=mode == "legacy_tensorflow").to(device).eval()

    def probabilities(x: Tensor) -> Tensor:
        # the same network's class probabilities (1008 TF-Inception classes), as StyleGAN's IS uses them
        return net.base(x.to(device), return_features=False, no_output_bias=True)

    return FeatureSpace(name=f"inception-{mode}", extractor=lambda x: net(x.to(device)), mode=mode, device=device,
                        class_probabilities=probabilities)


# ------------------------------------------------------------------------------------------------
# Samples
# ------------------------------------------------------------------------------------------------

def _seeds(n: int, offset: int) -> range:
    return range(offset, offset + n)


@torch.no_grad()
def sample_student(model: nn.Module, n: int, seed_offset: int = 0, batch_size: int = 500,
                   device: torch.device | str = "cpu", **deq_overrides: object) -> tuple[Tensor, dict]:
    """n images (uint8, (n, C, H, W)) from a student in eval mode, and GET's solver statistics
    (mean absolute / relative residual of the returned iterates, per-iteration relative residuals)."""
    model = model.to(device).eval()
    shape = (model.in_channels, model.input_size, model.input_size)
    out, abs_res, rel_res, traces = [], [], [], []
    for lo in range(0, n, batch_size):
        seeds = _seeds(min(batch_size, n - lo), seed_offset + lo)
        latents, labels = latents_for_seeds(seeds, shape, model.num_classes if model.cond else None)
        labels = None if labels is None else labels.to(device)
        if isinstance(model, GET):
            z0 = torch.stack([torch.randn(model.grid ** 2, model.hidden_size,
                                          generator=torch.Generator().manual_seed((s * 7919 + 17) % (1 << 63)))
                              for s in seeds])
            images, stats = model(latents.to(device), labels, z0=z0.to(device), return_stats=True, **deq_overrides)
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


@torch.no_grad()
def sample_teacher(denoise: Denoiser, n: int, shape: tuple[int, int, int], num_classes: int | None = None,
                   seed_offset: int = 0, batch_size: int = 500, sampler: SamplerConfig = SamplerConfig(),
                   device: torch.device | str = "cpu") -> Tensor:
    """n teacher images (uint8) with EDM's deterministic sampler (35 network evaluations by default)."""
    out = []
    for lo in range(0, n, batch_size):
        latents, labels = latents_for_seeds(_seeds(min(batch_size, n - lo), seed_offset + lo), shape, num_classes)
        x = edm_sampler(denoise, latents.to(device), None if labels is None else labels.to(device),
                        num_steps=sampler.num_steps, sigma_min=sampler.sigma_min, sigma_max=sampler.sigma_max,
                        rho=sampler.rho, solver=sampler.solver)
        out.append(to_uint8(x.float().cpu()))
    return torch.cat(out)


def write_images(images: Tensor, folder: str | Path) -> Path:
    """uint8 images (N, C, H, W) -> folder/000000.png ...; written to a temporary folder, then renamed."""
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} exists: write the images into a new folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    arr = images.permute(0, 2, 3, 1).numpy()
    for i, img in enumerate(arr):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(tmp / f"{i:06d}.png")
    os.replace(tmp, folder)
    return folder


# ------------------------------------------------------------------------------------------------
# Metrics (clean-fid does the statistics)
# ------------------------------------------------------------------------------------------------

def folder_features(folder: str | Path, space: FeatureSpace, batch_size: int = 256) -> np.ndarray:
    from cleanfid.fid import get_folder_features
    return get_folder_features(str(folder), model=space.extractor, num_workers=0, batch_size=batch_size,
                               device=space.device, mode=space.mode, custom_fn_resize=space.resize,
                               verbose=False)


def _unit_scale(feats: np.ndarray) -> np.ndarray:
    """Rows scaled to norm sqrt(d): KID's cubic kernel (x.y/d + 1)^3 then sees cosine similarities
    (raw ReLU features of very different norms gave negative KID estimates)."""
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return feats / np.maximum(norms, 1e-12) * math.sqrt(feats.shape[1])


def fid_kid(feats: np.ndarray, reference: np.ndarray) -> dict:
    """FID (clean-fid's fid_from_feats) and KID (its kernel_distance, on unit-scaled features).

    kernel_distance averages over random subsets drawn from numpy's global generator: it is seeded
    here (and the caller's state restored) so that the same images always give the same KID."""
    from cleanfid.fid import fid_from_feats, kernel_distance
    state = np.random.get_state()
    try:
        np.random.seed(0)
        kid = float(kernel_distance(_unit_scale(feats), _unit_scale(reference)))
    finally:
        np.random.set_state(state)
    return {"fid": float(fid_from_feats(feats, reference)), "kid": kid,
            "n": int(len(feats)), "n_reference": int(len(reference))}


@torch.no_grad()
def inception_score(folder: str | Path, space: FeatureSpace, splits: int = 10, batch_size: int = 256) -> dict:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) over the images in `folder`, mean and std over
    `splits` parts, from the Inception network's class probabilities (resized as its FID mode does)."""
    if space.class_probabilities is None:
        raise ValueError(f"the feature space {space.name!r} has no class probabilities: Inception Score needs Inception")
    from cleanfid.utils import ResizeDataset
    files = sorted(str(p) for p in Path(folder).glob("*.png"))
    splits = max(1, min(splits, len(files) // 2))   # a one-image split scores exactly 1, whatever the images
    data = ResizeDataset(files, mode=space.mode)
    if space.resize is not None:   # the resize its FID features use (as clean-fid's custom_fn_resize)
        data.fn_resize = space.resize
    probs = torch.cat([space.class_probabilities(torch.stack([data[j] for j in range(i, min(i + batch_size, len(files)))])).cpu()
                       for i in range(0, len(files), batch_size)]).double()
    scores = []
    for part in probs.chunk(splits):
        kl = part * (part.clamp_min(1e-12).log() - part.mean(0, keepdim=True).clamp_min(1e-12).log())
        scores.append(kl.sum(1).mean().exp().item())
    return {"is": float(np.mean(scores)), "is_std": float(np.std(scores)), "n": len(files), "splits": splits}


def cifar10_reference(root: str | Path, split: str, space: FeatureSpace, workdir: str | Path,
                      check_md5: bool = True) -> np.ndarray:
    """Features of the CIFAR-10 'train' (50,000) or 'test' (10,000) images from their on-disk files
    (getlib.data.cifar10), through the same folder-and-clean-fid road as generated images."""
    from getlib.data import cifar10
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    folder = Path(workdir) / f"cifar10-{split}"
    if not folder.exists():
        write_images(cifar10(root, train=split == "train", check_md5=check_md5)[0], folder)
    return folder_features(folder, space)


def score_images(images: Tensor, reference: np.ndarray, space: FeatureSpace, folder: str | Path,
                 inception_score_too: bool = False) -> dict:
    """Write uint8 `images` as PNGs into `folder` (new) and score them against reference features;
    with `inception_score_too` and a feature space that has class probabilities (Inception), also
    the Inception Score (a second pass over the images)."""
    folder = write_images(images, folder)
    scores = {**fid_kid(folder_features(folder, space), reference), "features": space.name}
    if inception_score_too and space.class_probabilities is not None:
        inception = inception_score(folder, space)
        scores.update({"is": inception["is"], "is_std": inception["is_std"]})
    return scores


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
        scores = [score_images(make(seed_start + seed * n), reference, space, workdir / f"{name.replace('/', '_')}-seed{seed}",
                               inception_score_too=True) for seed in seeds]
        fids, kids = [s["fid"] for s in scores], [s["kid"] for s in scores]
        row = {"source": name, "nfe": nfe, "fid": float(np.mean(fids)), "fid_std": float(np.std(fids)),
               "kid": float(np.mean(kids)), "n": n, "n_reference": len(reference), "seeds": len(seeds)}
        if "is" in scores[0]:
            row["is"] = float(np.mean([s["is"] for s in scores]))
        return row

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

    from getlib.deq import fp_correction
    from getlib.train import LOSSES

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


def write_results(rows: list[dict], folder: str | Path, name: str, title: str, note: str = "") -> None:
    """rows -> folder/name.json, name.csv and name.md (a Markdown table under `title`)."""
    folder = Path(folder)
    atomic_write_json(folder / f"{name}.json", rows)
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else "n/a" if v is None else str(v)

    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic_write(folder / f"{name}.csv", lambda f: f.write(text.getvalue().encode()))
    lines = [f"# {title}", ""] + ([note, ""] if note else []) + ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    atomic_write(folder / f"{name}.md", lambda f: f.write(("\n".join(lines) + "\n").encode()))

