"""The embedded profile's teacher: EDM's training recipe, sized for 2 CPU cores.

`train_teacher` fits `unet.TinyUNet` under EDM's preconditioning with EDM's loss (Adam,
learning-rate warm-up, an EMA whose half-life ramps up with training as in EDM) and saves the EMA
denoiser atomically; `checkpoints.load_teacher` returns it as a `Denoiser` for `edm.edm_sampler`.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from getlib import progress
from getlib.edm import edm_loss
from getlib.ema import ema_beta, update_ema
from getlib.io import atomic_torch_save
from getlib.settings import TeacherConfig
from getlib.unet import build_teacher

__all__ = ["TeacherConfig", "train_teacher"]


def train_teacher(images: Tensor, labels: Tensor | None, cfg: TeacherConfig, out_path: str | Path,
                  log: Callable[[dict], None] | None = None) -> dict:
    """Train on `images` in [-1, 1] (N, C, H, W) and save the EMA denoiser to `out_path`.

    Returns a summary (steps, seconds, final loss). The checkpoint holds the config, the EMA
    weights and the data shape; `load_teacher` rebuilds it.
    """
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    num_classes = int(labels.max()) + 1 if labels is not None else 0
    model = build_teacher(cfg, images.shape[1], num_classes).train()
    ema = build_teacher(cfg, images.shape[1], num_classes).eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start, step, seen, loss_avg = time.perf_counter(), 0, 0, float("nan")
    bar = progress.bar(cfg.max_steps, "teacher", "step")
    while step < cfg.max_steps:
        if cfg.time_budget_s is not None and time.perf_counter() - start > cfg.time_budget_s:
            break
        idx = torch.randint(images.shape[0], (cfg.batch_size,), generator=g)
        y = labels[idx] if (cfg.cond and labels is not None) else None
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        loss = edm_loss(model, images[idx], y, generator=g).sum() / cfg.batch_size
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        beta = ema_beta(seen, cfg.batch_size, cfg.ema_halflife_images, cfg.ema_rampup_ratio)  # as EDM: before counting
        update_ema(ema, model, beta)
        step, seen = step + 1, seen + cfg.batch_size
        loss_avg = loss.item() if step == 1 else 0.98 * loss_avg + 0.02 * loss.item()
        bar.update(1)
        if log and (step % 100 == 0 or step == cfg.max_steps):
            log(dict(step=step, loss=loss_avg, lr=opt.param_groups[0]["lr"], ema_beta=beta,
                     seconds=time.perf_counter() - start))
    bar.close()
    summary = dict(steps=step, images_seen=seen, seconds=time.perf_counter() - start, final_loss=loss_avg)
    # the file is a pure function of the data and settings: no timings in it (they are returned)
    atomic_torch_save({"config": asdict(cfg), "img_channels": images.shape[1], "num_classes": num_classes,
                       "ema": ema.state_dict(), "summary": {k: v for k, v in summary.items() if k != "seconds"}},
                      Path(out_path))
    return summary
