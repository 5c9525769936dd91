"""The embedded profile's teacher: a small EDM-preconditioned UNet trained on the digits.

`TinyUNet` is the raw network F(x_in, c_noise, class_labels) of EDM's preconditioning: residual
blocks with GroupNorm and SiLU at 8, 4 and 2 pixels, self-attention at 2 pixels, skip connections,
and a noise (and class) embedding added to every block. `train_teacher` fits it with EDM's loss
(Adam, learning-rate warm-up, an EMA whose half-life ramps up with training as in EDM), and saves the
EMA denoiser atomically; `load_teacher` returns it as a `Denoiser` for `edm.edm_sampler`.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from getlib.edm import EDMPrecond, edm_loss
from getlib.ema import ema_beta, update_ema
from getlib.io import atomic_torch_save, first_line

__all__ = ["TeacherConfig", "TinyUNet", "build_teacher", "train_teacher", "load_teacher"]


# ------------------------------------------------------------------------------------------------
# Network
# ------------------------------------------------------------------------------------------------

class NoiseEmbedding(nn.Module):
    """c_noise -> sinusoidal features -> MLP, (B,) -> (B, dim)."""

    def __init__(self, dim: int, num_freqs: int = 32):
        super().__init__()
        self.register_buffer("freqs", torch.exp(-math.log(1e4) * torch.arange(num_freqs) / num_freqs))
        self.mlp = nn.Sequential(nn.Linear(2 * num_freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: Tensor) -> Tensor:
        angle = c_noise.float()[:, None] * self.freqs[None] * 100  # c_noise = ln(sigma)/4 is O(1)
        return self.mlp(torch.cat([angle.sin(), angle.cos()], dim=1))


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(8, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention2d(nn.Module):
    def __init__(self, channels: int, num_heads: int = 4):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(8, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, C // self.num_heads, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class TinyUNet(nn.Module):
    """UNet over `channels` per resolution (each level halves the size), attention at the lowest."""

    def __init__(self, img_channels: int = 1, channels: tuple[int, ...] = (32, 64, 64), emb_dim: int = 128,
                 num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.noise_emb = NoiseEmbedding(emb_dim)
        self.class_emb = nn.Embedding(num_classes, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(img_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        c_prev = channels[0]
        for c in channels:
            self.down.append(ResBlock(c_prev, c, emb_dim))
            c_prev = c
        self.mid1, self.mid_attn, self.mid2 = ResBlock(c_prev, c_prev, emb_dim), SelfAttention2d(c_prev), ResBlock(c_prev, c_prev, emb_dim)
        self.up = nn.ModuleList()
        for c in reversed(channels):
            self.up.append(ResBlock(c_prev + c, c, emb_dim))
            c_prev = c
        self.norm_out = nn.GroupNorm(8, c_prev)
        self.conv_out = nn.Conv2d(c_prev, img_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> Tensor:
        emb = self.noise_emb(c_noise)
        if self.class_emb is not None:
            if class_labels is None:
                raise ValueError("this teacher is class-conditional: pass class_labels")
            emb = emb + self.class_emb(class_labels)
        h = self.conv_in(x.contiguous(memory_format=torch.channels_last))  # faster convs on CPU
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            h = block(h, emb)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, block in enumerate(self.up):
            if i > 0:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------

@dataclass
class TeacherConfig:
    """The embedded teacher and its training (EDM's recipe, sized for 2 CPU cores)."""
    channels: tuple[int, ...] = (32, 64, 64)
    emb_dim: int = 128
    cond: bool = False
    lr: float = 1e-3
    warmup_steps: int = 200
    batch_size: int = 256
    max_steps: int = 1000                   # ~4.5 min on 2 CPU cores; FID 1.8 (benchmarks/results/teacher.md)
    time_budget_s: float | None = None      # stop early after this much wall-clock time (not reproducible)
    ema_halflife_images: float = 50_000     # EDM: 0.5 M images for CIFAR-10
    ema_rampup_ratio: float = 0.05          # half-life <= ratio x images seen (EDM's ramp-up)
    seed: int = 0

    def __post_init__(self):
        self.channels = tuple(self.channels)


def build_teacher(cfg: TeacherConfig, img_channels: int, num_classes: int) -> EDMPrecond:
    net = TinyUNet(img_channels, cfg.channels, cfg.emb_dim, num_classes if cfg.cond else 0)
    return EDMPrecond(net.to(memory_format=torch.channels_last))


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
        if log and (step % 100 == 0 or step == cfg.max_steps):
            log(dict(step=step, loss=loss_avg, lr=opt.param_groups[0]["lr"], ema_beta=beta,
                     seconds=time.perf_counter() - start))
    summary = dict(steps=step, images_seen=seen, seconds=time.perf_counter() - start, final_loss=loss_avg)
    # the file is a pure function of the data and settings: no timings in it (they are returned)
    atomic_torch_save({"config": asdict(cfg), "img_channels": images.shape[1], "num_classes": num_classes,
                       "ema": ema.state_dict(), "summary": {k: v for k, v in summary.items() if k != "seconds"}},
                      Path(out_path))
    return summary


def load_teacher(path: str | Path) -> EDMPrecond:
    """The EMA denoiser D(x, sigma, class_labels) saved by `train_teacher`, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no teacher checkpoint at {path}: run the teacher stage first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        cfg = TeacherConfig(**ckpt["config"])
        teacher = build_teacher(cfg, ckpt["img_channels"], ckpt["num_classes"])
        teacher.load_state_dict(ckpt["ema"])
    except Exception as e:  # a truncated file, another kind of checkpoint, or other weights
        raise ValueError(f"{path}: not a teacher checkpoint written by train_teacher "
                         f"({type(e).__name__}: {first_line(e)})") from e
    return teacher.eval().requires_grad_(False)

