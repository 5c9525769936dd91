"""The embedded profile's teacher network: a small U-Net under EDM's preconditioning.

`TinyUNet` is the raw network F(x_in, c_noise, class_labels) of `edm.EDMPrecond`: residual blocks
with GroupNorm and SiLU at 8, 4 and 2 pixels, self-attention at 2 pixels, skip connections, and a
noise (and class) embedding added to every block. `teacher.train_teacher` trains it;
`checkpoints.load_teacher` rebuilds it from its file.
"""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from getlib.edm import EDMPrecond
from getlib.settings import TeacherConfig

__all__ = ["TinyUNet", "build_teacher"]


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


def build_teacher(cfg: TeacherConfig, img_channels: int, num_classes: int) -> EDMPrecond:
    net = TinyUNet(img_channels, cfg.channels, cfg.emb_dim, num_classes if cfg.cond else 0)
    return EDMPrecond(net.to(memory_format=torch.channels_last))
