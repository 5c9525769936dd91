"""Distillation: train a one-step student (GET or ViT) on teacher noise/image pairs.

The paper's recipe is the default: L1 loss on each of GET's 6 unrolled states with fixed-point
correction weights 0.8^(n-k-1), AdamW lr 1e-4 (weight decay 0, default betas), no warm-up or
clipping, EMA 0.9999 per step, batch 128. Every knob is a `TrainConfig` field (and a CLI flag).

Determinism. What a step sees depends on (seed, step, world size) alone: each rank's batch of step
s is a slice of a per-epoch permutation of its own shards, and each pair's initial equilibrium state
z0 follows the one z0 rule (`models.z0_for_keys`), keyed by (seed, the pair's index in the whole
set, epoch). So a run resumed from its checkpoint ends with weights bit-identical to an
uninterrupted one (on CPU); a pair's
z0 does not depend on which rank or batch it lands in, so W ranks and one process given the same
global batch compute the same step. Resuming with another world size is refused (it changes the order).

    python -m getlib.train --pairs data/pairs --out runs/get-t --model GET-T/2 --max_steps 800000
    torchrun --nproc_per_node=4 -m getlib.train --pairs ... --out ... --batch_size 128
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader

from getlib.batches import StepBatches, TrainingItems, stacked
from getlib.cli import add_flags, as_flags, read_flags
from getlib.deq import LOSSES, fp_correction
from getlib.devices import resolve_device
from getlib.ema import ema_beta, update_ema
from getlib.io import atomic_torch_save, atomic_write_json
from getlib.models import GET, ViT_models, build_model, count_params, mix_seed, model_kwargs, student_blob
from getlib import progress
from getlib.pairs import PairDataset
from getlib.runs import (TIMING, Logs, RunRecord, checkpoint_path, jsonable, load_checkpoint, resume_problems,
                         run_recipe, run_settings, seconds_trained)
from getlib.settings import TrainConfig

__all__ = ["TrainConfig", "train", "TrainingDiverged", "learning_rate", "cli_args", "parse_args", "main"]


class TrainingDiverged(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------
# Set-up
# ------------------------------------------------------------------------------------------------

def _build(cfg: TrainConfig, pairs: PairDataset) -> nn.Module:
    """The student for this pair set's data shape, with the run's DEQ recipe."""
    c, h, w = pairs.image_shape
    if h != w:
        raise ValueError(f"pairs: images must be square, got {h}x{w}")
    if cfg.cond and pairs.num_classes is None:
        raise ValueError(f"cond=True needs class-conditional pairs, but {cfg.pairs} is unconditional")
    kwargs = dict(input_size=h, in_channels=c, cond=cfg.cond, num_classes=pairs.num_classes or 10)
    if cfg.model in ViT_models:
        if cfg.deq:
            raise ValueError(f"deq settings apply to GET models, not to model={cfg.model!r}")
        return build_model(cfg.model, **kwargs)
    return build_model(cfg.model, deq=cfg.deq, **kwargs)  # names an unknown model


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of step `step` (0-based): linear warm-up, then constant or cosine to 0."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "cosine":
        progress = max(0, step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * warm


def _loader(cfg: TrainConfig, pairs: PairDataset, model: nn.Module, rank: int, world: int, step: int,
            device: torch.device) -> DataLoader:
    """This rank's batches from step `step` on: (latents, images, labels, z0)."""
    z0_shape = (model.grid ** 2, model.hidden_size) if isinstance(model, GET) else None
    n = len(pairs) if cfg.num_pairs is None else cfg.num_pairs // world   # this rank's first n pairs
    targets = None
    if cfg.shuffle_targets:
        targets = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(cfg.seed, rank, 2))).tolist()
    return DataLoader(TrainingItems(pairs, z0_shape, cfg.seed, targets),
                      batch_sampler=StepBatches(n, cfg.batch_size // world, cfg.seed, rank, step, cfg.max_steps),
                      collate_fn=stacked, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                      persistent_workers=cfg.num_workers > 0)


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------

def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a distillation run; returns its summary (also written to out/run.json)."""
    if not cfg.pairs or not cfg.out:
        raise ValueError("pairs and out must be set (the pair set folder and the run folder)")
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the world size {world}")
    if not Path(cfg.pairs).exists():
        raise FileNotFoundError(f"pairs: no pair set at {cfg.pairs}: generate the pairs first")
    pairs = PairDataset(cfg.pairs, rank=rank, world_size=world)  # names a broken pair set
    if cfg.num_pairs is not None and cfg.num_pairs // world > len(pairs):
        raise ValueError(f"num_pairs {cfg.num_pairs}: {cfg.pairs} holds {len(pairs)} pairs per rank on {world} "
                         f"rank(s), fewer than num_pairs // {world}")
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    model = _build(cfg, pairs)
    device = resolve_device(cfg.device, local_rank)
    problems = resume_problems(cfg, world)   # refuse a folder it cannot resume before anything starts
    if problems:
        raise ValueError(f"{cfg.out}: cannot resume this run: {'; '.join(problems)}. Use another out folder, "
                         f"or delete it to start over")
    ckpt = checkpoint_path(cfg.out)
    saved = load_checkpoint(ckpt) if ckpt.exists() else None
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(cfg, pairs, model, saved, device, rank, world)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, pairs: PairDataset, model: nn.Module, saved: dict | None, device: torch.device,
           rank: int, world: int) -> dict:
    """The loop, phase by phase. Every rank takes the same steps; rank 0 alone writes."""
    out = Path(cfg.out)
    # Numerics: TF32 matmuls on CUDA; bf16 autocast as `precision` says.
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    # The student, its EMA and AdamW, restored from the checkpoint when resuming.
    model, ema, opt = _student_ema_optimiser(cfg, model, saved, device)
    step, images_seen, recent = (saved["step"], saved["images_seen"], list(saved["recent_losses"])) if saved else (0, 0, [])
    wall_before = seconds_trained(out) if saved is not None else 0.0
    # Bookkeeping (rank 0): the run record, and the logs cut back to the checkpoint's step.
    record = RunRecord(cfg, resumed=saved is not None) if rank == 0 else None
    logs = Logs(out, step) if rank == 0 else None
    # What steps: the student, compiled and DDP-wrapped as asked; its batches from `step` on.
    net = torch.compile(model) if cfg.compile else model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    loader = _loader(cfg, pairs, model, rank, world, step, device)
    start = log_t = time.perf_counter()
    log_images, stopped_by, bar = 0, "max_steps", _progress(cfg, rank, step)
    for batch in loader:
        # One optimisation step; a diverging loss stops the run before its update; then the EMA.
        lr = learning_rate(cfg, step)
        value, per_state, grad_norm = _loss_and_gradients(cfg, net, model, opt, batch, lr, device, bf16, world)
        _check_divergence(value, recent, step + 1, cfg, checkpoint_path(out))
        opt.step()
        beta = (ema_beta(images_seen, cfg.batch_size, cfg.ema_halflife_images, cfg.ema_rampup_ratio)
                if cfg.ema_halflife_images else cfg.ema_decay)   # EDM: from the images seen before this step
        update_ema(ema, model, beta)
        step, images_seen, log_images = step + 1, images_seen + cfg.batch_size, log_images + cfg.batch_size
        # The wall-clock budget, agreed by every rank so that all stop at the same step.
        elapsed = wall_before + time.perf_counter() - start
        out_of_time = _out_of_time(cfg, elapsed, world, device)
        last = step == cfg.max_steps or out_of_time
        # Rank 0 writes, on each cadence and at the last step: logs, EMA samples and snapshots, checkpoint.
        if rank == 0:
            if step % cfg.log_every == 0 or last:
                now = time.perf_counter()
                logs.write("metrics.csv", {
                    "step": step, "loss": value, **{f"loss_state{k + 1}": float(l) for k, l in enumerate(per_state)},
                    "lr": lr, "ema_beta": beta, "grad_norm": _grad_norm(model) if grad_norm is None else grad_norm})
                logs.write(TIMING, {"step": step, "images_per_s": log_images / max(now - log_t, 1e-9),
                                    "seconds": elapsed})
                log_t, log_images = now, 0
            if step % cfg.sample_every == 0 or last:
                _sample_report(ema, cfg, pairs, device, out, step)
            if cfg.snapshot_every and (step % cfg.snapshot_every == 0 or last):
                atomic_torch_save(student_blob(cfg.model, ema, {"step": step, "images_seen": images_seen}),
                                  out / "snapshots" / f"step-{step:07d}.pt")
            if step % cfg.ckpt_every == 0 or last:
                record.save_checkpoint({"step": step, "images_seen": images_seen,
                                        "config": {**run_settings(cfg), "world_size": world},
                                        "recent_losses": list(recent), "model": model.state_dict(),
                                        "ema": ema.state_dict(), "opt": opt.state_dict()}, elapsed)
        if bar is not None:
            bar.update(1)
            rate = (step - bar.initial) * cfg.batch_size / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(loss=f"{value:.4f}", img_s=f"{rate:.0f}", refresh=False)
        if out_of_time:
            stopped_by = "time_budget_s"
            break
    for closing in (bar, logs):
        if closing is not None:
            closing.close()
    # The finished student and its summary (the files hold no timings; the record keeps the seconds).
    summary = {"model": cfg.model, "params": count_params(model), "cond": cfg.cond, "steps": step,
               "images_seen": images_seen, "stopped_by": stopped_by, "world_size": world,
               "device": str(device), "recipe": run_recipe(model, cfg), "config": run_settings(cfg)}
    seconds = wall_before + time.perf_counter() - start
    if rank == 0:
        atomic_torch_save(student_blob(cfg.model, ema, summary), out / "student.pt")
        atomic_write_json(out / "run.json", jsonable(summary))
        record.finish(seconds)
    return {**summary, "seconds": seconds}


def _student_ema_optimiser(cfg: TrainConfig, model: nn.Module, saved: dict | None,
                           device: torch.device) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
    """The student on its device, its EMA twin (a copy to start with) and AdamW; from the checkpoint
    `saved` when resuming."""
    model = model.to(device).train()
    ema = build_model(cfg.model, **model_kwargs(model)).to(device).eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                            fused=True)   # (a run resumed from a checkpoint keeps the checkpoint's choice)
    if saved is not None:
        model.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        opt.load_state_dict(saved["opt"])
    return model, ema, opt


def _loss_and_gradients(cfg: TrainConfig, net: nn.Module, model: nn.Module, opt: torch.optim.Optimizer,
                        batch: tuple[Tensor, ...], lr: float, device: torch.device, bf16: bool,
                        world: int) -> tuple[float, list[Tensor], float | None]:
    """Forward (bf16 autocast as asked), the loss of every supervised state weighted by the
    fixed-point correction, backward and clipping. Returns the loss averaged over the ranks, the
    per-state losses and the gradient norm before clipping (None without clipping)."""
    latent, image, label, z0 = batch
    latent, image = latent.to(device, non_blocking=True), image.to(device, non_blocking=True)
    label = label.to(device) if cfg.cond else None
    kw = {"z0": z0.to(device, non_blocking=True)} if z0.shape[1:].numel() else {}
    for group in opt.param_groups:
        group["lr"] = lr
    loss_fn = LOSSES[cfg.loss]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        preds = net(latent, label, **kw)
        loss, per_state = fp_correction(lambda p, t: loss_fn(p.float(), t), preds, image, cfg.gamma)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item() if cfg.grad_clip else None
    value = loss.detach()
    if world > 1:
        dist.all_reduce(value)
        value /= world
    return value.item(), per_state, grad_norm


def _out_of_time(cfg: TrainConfig, elapsed: float, world: int, device: torch.device) -> bool:
    """Whether the wall-clock budget is spent; under DDP, whether any rank's is (so all stop together)."""
    out_of_time = cfg.time_budget_s is not None and elapsed > cfg.time_budget_s
    if world > 1 and cfg.time_budget_s is not None:
        flag = torch.tensor(float(out_of_time), device=device)
        dist.all_reduce(flag)
        out_of_time = flag.item() > 0
    return out_of_time


def _grad_norm(model: nn.Module) -> float:
    """The total L2 norm of the gradients (before any clipping; the step left them unchanged)."""
    norms = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return torch.stack(norms).norm().item() if norms else 0.0


def _check_divergence(value: float, recent: list[float], step: int, cfg: TrainConfig, ckpt: Path) -> None:
    exploded = len(recent) >= 20 and value > cfg.explode_factor * float(np.median(recent))
    if not math.isfinite(value) or exploded:
        where = f"the last good checkpoint is {ckpt}" if ckpt.exists() else "no checkpoint was written yet"
        raise TrainingDiverged(f"loss {'became ' + str(value) if not math.isfinite(value) else f'exploded to {value:.4g}'} "
                               f"at step {step}; {where}. Lower lr, add warmup_steps or grad_clip.")
    recent.append(value)
    del recent[:-100]


def _progress(cfg: TrainConfig, rank: int, step: int):
    """Rank 0's bar: in the stage command's terminal (getlib.progress), or on stderr if cfg.progress;
    None where nothing would show it."""
    bar = progress.bar(cfg.max_steps, cfg.model, "step", initial=step, stderr=cfg.progress) if rank == 0 else None
    return None if bar is None or bar.disable else bar


# ------------------------------------------------------------------------------------------------
# EMA samples during training
# ------------------------------------------------------------------------------------------------

@torch.no_grad()
def _sample_report(ema: nn.Module, cfg: TrainConfig, pairs: PairDataset, device: torch.device, out: Path,
                   step: int) -> None:
    """EMA samples for fixed seeds -> samples/step-XXXXXXX.png; GET's residuals -> samples.csv."""
    from getlib.edm import latents_for_seeds
    from getlib.images import save_grid

    n = cfg.num_samples
    latents, labels = latents_for_seeds(range(n), pairs.image_shape, pairs.num_classes if cfg.cond else None)
    kw = dict(z0=ema.initial_states(range(n)).to(device), return_stats=True) if isinstance(ema, GET) else {}
    result = ema(latents.to(device), None if labels is None else labels.to(device), **kw)
    images, stats = result if isinstance(ema, GET) else (result, None)
    save_grid(images.float().cpu(), out / "samples" / f"step-{step:07d}.png")
    row = {"step": step, "abs_residual": float("nan"), "rel_residual": float("nan"), "iterations": 0}
    if stats is not None:
        row.update(abs_residual=stats.abs_lowest.mean().item(), rel_residual=stats.rel_lowest.mean().item(),
                   iterations=stats.n_iter)
    path = out / "samples.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def cli_args(cfg: TrainConfig) -> list[str]:
    """`cfg` as command-line flags that `main` reads back to the same settings."""
    return as_flags(cfg)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The TrainConfig of a command line (see `main`): a YAML file of fields, overridden by flags."""
    ap = argparse.ArgumentParser(prog="python -m getlib.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML file of TrainConfig fields (flags override it)")
    add_flags(ap, TrainConfig)
    args = vars(ap.parse_args(argv))
    config = args.pop("config", None)
    settings = {**((yaml.safe_load(open(config)) or {}) if config else {}), **args}
    return TrainConfig.from_dict(read_flags(settings, TrainConfig))


def main(argv: list[str] | None = None) -> dict:
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
