"""The Generative Equilibrium Transformer (GET) and its ViT baselines.

Built to docs/paper.md, "The GET architecture". Both models map a noise image to an image in one
network call: patchify + frozen 2D sin-cos positions -> transformer blocks -> LayerNorm + Linear
decoder -> unpatchify. GET splits its blocks into an injection transformer (run once) and an
equilibrium transformer f whose fixed point z* = f(z*) is decoded; the injection reaches every
equilibrium block additively through its qkv projection. Class-conditional models add one shared
class embedding to every block's qkv as well (no adaLN anywhere).

Module names equal the authors' state-dict keys, so their released checkpoints load directly
(`load_released`). Registries, keyed by the paper's names, build the paper's configs with CIFAR-10
defaults (32x32x3, unconditional); keyword arguments change the data shape, conditioning and DEQ:

    model = GET_models['GET-T/2']()                                    # 8,558,092 parameters
    model = GET_models['GET-P/2'](input_size=8, in_channels=1, cond=True)   # digits scale
"""
from __future__ import annotations

import argparse
import dataclasses
import pickle
import zipfile
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from getlib.deq import SolverStats, solve_deq
from getlib.io import first_line
from getlib.settings import GET_CONFIGS, VIT_CONFIGS, DEQConfig

__all__ = ["GET", "ViT", "GET_models", "ViT_models", "build_model", "load_released", "load_student",
           "sincos_pos_embed_2d", "count_params", "z0_for_keys", "mix_seed"]


# ------------------------------------------------------------------------------------------------
# Positional embedding
# ------------------------------------------------------------------------------------------------

def sincos_pos_embed_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2D sin-cos embedding (MAE style) of a grid x grid token layout, (grid*grid, dim).

    The first half of the channels encodes a token's column, the second half its row (the order of
    the authors' release); each half is [sin(pos * w_i), cos(pos * w_i)] with w_i = 1/10000^(i/(dim/4)).
    Tokens are numbered row-major, as the patch embedding flattens them.
    """
    if dim % 4:
        raise ValueError(f"sin-cos positional embedding needs hidden_size divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))   # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64),
                                torch.arange(grid, dtype=torch.float64), indexing="ij")

    def encode(pos: Tensor) -> Tensor:
        angle = pos.reshape(-1, 1) * omega                                             # (T, dim/4)
        return torch.cat([angle.sin(), angle.cos()], dim=1)                             # (T, dim/2)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()                        # (T, dim)


# ------------------------------------------------------------------------------------------------
# Building blocks (names match the released state dicts)
# ------------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """Conv with kernel = stride = patch size: (B, C, H, W) -> (B, H*W/p^2, D)."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)                                   # (B, T, D)


class Attention(nn.Module):
    """Multi-head self-attention whose qkv can receive additive injections."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, c: Tensor | None = None, u: Tensor | None = None) -> Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x)                                                                 # (B, T, 3D)
        if c is not None:       # class embedding, (B, 1, 3D)
            qkv = qkv + c
        if u is not None:       # input injection, (B, T, 3D)
            qkv = qkv + u
        q, k, v = qkv.view(B, T, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)                                       # (B, H, T, D/H)
        return self.proj(x.transpose(1, 2).reshape(B, T, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()    # exact (erf) GELU
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + Attn(LN(x); c, u), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, c: Tensor | None = None, u: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), c, u)
        return x + self.mlp(self.norm2(x))


class ClassEmbedding(nn.Module):
    """One (num_classes, 3D) table shared by every block: added to each block's qkv."""

    def __init__(self, num_classes: int, qkv_dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes, qkv_dim)

    def forward(self, labels: Tensor) -> Tensor:
        return self.embedding_table(labels).unsqueeze(1)                                # (B, 1, 3D)


class FinalLayer(nn.Module):
    """Decoder: LayerNorm -> Linear(D, p*p*C), zero-initialised."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm_final(x))


# ------------------------------------------------------------------------------------------------
# Shared skeleton: embedding, class injection, decoder, initialisation
# ------------------------------------------------------------------------------------------------

class _PatchTransformer(nn.Module):
    def __init__(self, input_size: int, patch_size: int, in_channels: int, hidden_size: int,
                 num_heads: int, num_classes: int, cond: bool, name: str | None):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by patch_size {patch_size}")
        self.name = name or type(self).__name__
        self.input_size, self.patch_size = input_size, patch_size
        self.in_channels = self.out_channels = in_channels
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.num_classes, self.cond = num_classes, cond
        self.grid = input_size // patch_size

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        # frozen, but a parameter: it is in the state dicts and in the paper's parameter counts
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid ** 2, hidden_size), requires_grad=False)
        if cond:
            self.y_embedder = ClassEmbedding(num_classes, 3 * hidden_size)

    def _finish_init(self, hidden_size: int) -> None:
        self.final_layer = FinalLayer(hidden_size, self.patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The paper's init: xavier-uniform Linear with zero bias, LayerNorm 1/0, patch conv xavier
        on its flattened weight, class table N(0, 0.02), zero decoder, sin-cos positions."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.pos_embed.data.copy_(sincos_pos_embed_2d(self.hidden_size, self.grid).unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        if self.cond:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def _check_inputs(self, noise: Tensor, class_labels: Tensor | None) -> None:
        want = (self.in_channels, self.input_size, self.input_size)
        if noise.dim() != 4 or tuple(noise.shape[1:]) != want:
            raise ValueError(f"{self.name} expects noise of shape (B, {want[0]}, {want[1]}, {want[2]}), "
                             f"got {tuple(noise.shape)}")
        if self.cond:
            if class_labels is None:
                raise ValueError(f"{self.name} is class-conditional: pass class_labels (B,) integers")
            if class_labels.shape != (noise.shape[0],) or class_labels.is_floating_point():
                raise ValueError(f"class_labels must be ({noise.shape[0]},) integers, got "
                                 f"{tuple(class_labels.shape)} {class_labels.dtype}")
            if class_labels.numel() and (class_labels.min() < 0 or class_labels.max() >= self.num_classes):
                raise ValueError(f"class_labels must lie in [0, {self.num_classes}), got "
                                 f"[{int(class_labels.min())}, {int(class_labels.max())}]")
        elif class_labels is not None:
            raise ValueError(f"{self.name} is unconditional (cond=False) but class_labels were given")

    def embed(self, noise: Tensor, class_labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Tokens (B, T, D) with positions, and the class injection (B, 1, 3D) or None."""
        self._check_inputs(noise, class_labels)
        x = self.x_embedder(noise) + self.pos_embed
        c = self.y_embedder(class_labels) if self.cond else None
        return x, c

    def decode(self, z: Tensor) -> Tensor:
        """(B, T, D) tokens -> (B, C, H, W) image."""
        x = self.final_layer(z)                                                           # (B, T, p*p*C)
        B, g, p, C = x.shape[0], self.grid, self.patch_size, self.out_channels
        x = x.reshape(B, g, g, p, p, C)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(B, C, g * p, g * p)


# ------------------------------------------------------------------------------------------------
# GET's initial state: one rule for every z0 the project draws
# ------------------------------------------------------------------------------------------------

def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix-style), for per-item generators."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return h >> 1


def z0_for_keys(keys: list[tuple[int, ...]], token_shape: tuple[int, int]) -> Tensor:
    """The one z0 rule: the initial equilibrium state of the sample keyed by the integers `key` is
    N(0, I) of `token_shape` (T, D), drawn from a CPU generator seeded with mix_seed(*key, 1).

    A generated sample is keyed by its seed s, as its latent and label are (`edm.latents_for_seeds`);
    a training pair by (training seed, its index in the pair set, epoch). So a z0 depends on its
    key alone, never on the batch, rank or device. Returns (len(keys), T, D).
    """
    z0 = torch.empty(len(keys), *token_shape)
    for row, key in enumerate(keys):
        torch.randn(token_shape, generator=torch.Generator().manual_seed(mix_seed(*key, 1)), out=z0[row])
    return z0


# ------------------------------------------------------------------------------------------------
# GET
# ------------------------------------------------------------------------------------------------

class GET(_PatchTransformer):
    """Generative Equilibrium Transformer.

    forward(noise, class_labels=None, z0=None, *, generator=None, return_stats=False, **deq_overrides)
      eval mode:  the decoded lowest-residual fixed-point iterate, (B, C, H, W).
      train mode: the decoded supervised states [x_1, ..., x_n] (the paper: the 6 unrolled states),
                  for the fixed-point correction loss.
    z0, the initial equilibrium state (B, T, D), is drawn N(0, I) from `generator` (or the global
    RNG) unless given; the pipeline gives it, by seed (`initial_states`, `z0_for_keys`).
    `deq_overrides` change DEQConfig fields for this call, e.g.
    `model(noise, eval_f_max_iter=12, eval_f_solver='anderson')`. With return_stats=True the
    solver's SolverStats are returned as well.
    """

    def __init__(self, input_size: int = 32, patch_size: int = 2, in_channels: int = 3,
                 hidden_size: int = 256, depth: int = 6, deq_depth: int = 3, num_heads: int = 4,
                 mlp_ratio: float = 4.0, deq_mlp_ratio: float = 6.0, num_classes: int = 10,
                 cond: bool = False, deq: DEQConfig | dict | None = None, name: str | None = None):
        super().__init__(input_size, patch_size, in_channels, hidden_size, num_heads, num_classes,
                         cond, name)
        self.deq_depth = deq_depth
        self.deq_cfg = deq if isinstance(deq, DEQConfig) else DEQConfig.from_dict(deq)
        self.blocks = nn.ModuleList([Block(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.qkv_inj = nn.Linear(hidden_size, 3 * hidden_size * deq_depth, bias=False)
        self.deq_blocks = nn.ModuleList([Block(hidden_size, num_heads, deq_mlp_ratio)
                                         for _ in range(deq_depth)])
        self._finish_init(hidden_size)

    def inject(self, x: Tensor, c: Tensor | None) -> tuple[Tensor, ...]:
        """Injection transformer, then one Linear split into per-block qkv injections u_l (B, T, 3D)."""
        for block in self.blocks:
            x = block(x, c)
        return self.qkv_inj(x).chunk(self.deq_depth, dim=-1)

    def equilibrium_map(self, u: tuple[Tensor, ...], c: Tensor | None, memory_efficient: bool = False,
                        state_norm: bool = False) -> Callable[[Tensor], Tensor]:
        """f(z) = block_L(...block_1(z, u_1)..., u_L); with memory_efficient, each block call is
        checkpointed (recomputed in backward), which leaves the gradients unchanged. With state_norm
        (beyond the paper) f returns the per-token LayerNorm of that, without affine parameters."""
        def f(z: Tensor) -> Tensor:
            for block, u_l in zip(self.deq_blocks, u):
                if memory_efficient and torch.is_grad_enabled():
                    z = checkpoint(block, z, c, u_l, use_reentrant=False)
                else:
                    z = block(z, c, u_l)
            return F.layer_norm(z, z.shape[-1:], eps=1e-6) if state_norm else z
        return f

    @torch.no_grad()
    def iterates(self, noise: Tensor, class_labels: Tensor | None, z0: Tensor, num_iter: int) -> list[Tensor]:
        """The plain fixed-point iterates [z_0, z_1 = f(z_0), ..., z_num_iter] (B, T, D) of this model's
        map, for diagnostics: iterate k is what `num_iter` = k iterations with return_final decode."""
        x, c = self.embed(noise, class_labels)
        f = self.equilibrium_map(self.inject(x, c), c, state_norm=self.deq_cfg.state_norm)
        states = [z0.to(x)]
        for _ in range(num_iter):
            states.append(f(states[-1]))
        return states

    def initial_states(self, seeds: list[int] | range) -> Tensor:
        """z0 of the samples with these seeds (`z0_for_keys`), (B, T, D) on the CPU."""
        return z0_for_keys([(int(s),) for s in seeds], (self.grid ** 2, self.hidden_size))

    def initial_state(self, batch: int, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z0 ~ N(0, I) of the token shape (B, T, D), drawn on the generator's device (CPU for a
        CPU generator, so a seed gives the same z0 on any device) and moved to `like`'s."""
        device = generator.device if generator is not None else like.device
        z0 = torch.randn(batch, self.grid ** 2, self.hidden_size, generator=generator, device=device)
        return z0.to(device=like.device, dtype=like.dtype)

    def forward(self, noise: Tensor, class_labels: Tensor | None = None, z0: Tensor | None = None, *,
                generator: torch.Generator | None = None, return_stats: bool = False,
                **deq_overrides: object) -> Tensor | list[Tensor] | tuple[object, SolverStats]:
        cfg = self.deq_cfg.replace(**deq_overrides) if deq_overrides else self.deq_cfg
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.training):  # sampling: no autograd
            x, c = self.embed(noise, class_labels)                                        # (B, T, D)
            u = self.inject(x, c)
            if z0 is None:
                z0 = self.initial_state(x.shape[0], x, generator)
            elif z0.shape != x.shape:
                raise ValueError(f"z0 must have the token shape {tuple(x.shape)}, got {tuple(z0.shape)}")
            f = self.equilibrium_map(u, c, cfg.memory_efficient, cfg.state_norm)
            states, stats = solve_deq(f, z0.to(x), cfg, training=self.training)
            images = [self.decode(z) for z in states]
        out = images if self.training else images[-1]
        return (out, stats) if return_stats else out


# ------------------------------------------------------------------------------------------------
# ViT baseline
# ------------------------------------------------------------------------------------------------

class ViT(_PatchTransformer):
    """A plain stack of the same blocks; the class embedding is added to every block's qkv.

    forward(noise, class_labels=None) -> (B, C, H, W) in both modes: a single state, so the
    fixed-point correction reduces to the plain loss. It has no equilibrium state: `z0` and
    `generator` are accepted for GET's calling convention and ignored.
    """

    def __init__(self, input_size: int = 32, patch_size: int = 2, in_channels: int = 3,
                 hidden_size: int = 384, depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0,
                 num_classes: int = 10, cond: bool = False, name: str | None = None):
        super().__init__(input_size, patch_size, in_channels, hidden_size, num_heads, num_classes,
                         cond, name)
        self.blocks = nn.ModuleList([Block(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self._finish_init(hidden_size)

    def forward(self, noise: Tensor, class_labels: Tensor | None = None, z0: Tensor | None = None, *,
                generator: torch.Generator | None = None) -> Tensor:
        x, c = self.embed(noise, class_labels)
        for block in self.blocks:
            x = block(x, c)
        return self.decode(x)


# ------------------------------------------------------------------------------------------------
# Registries
# ------------------------------------------------------------------------------------------------

def _registry(cls: type, configs: dict[str, dict]) -> dict[str, Callable[..., nn.Module]]:
    return {name: partial(cls, name=name, **arch) for name, arch in configs.items()}


GET_models = _registry(GET, GET_CONFIGS)
ViT_models = _registry(ViT, VIT_CONFIGS)


def build_model(name: str, **kwargs: object) -> nn.Module:
    """A model from either registry by its paper name."""
    registry = {**GET_models, **ViT_models}
    if name not in registry:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(registry)}")
    return registry[name](**kwargs)


def count_params(model: nn.Module) -> int:
    """All parameters, the frozen positional embedding included (as the paper counts)."""
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------
# The authors' released checkpoints
# ------------------------------------------------------------------------------------------------

def _load_tensors_only(path: Path) -> dict:
    """torch.load with weights_only=True; the release's argparse Namespace is allow-listed
    (it holds plain values), so no pickled code runs."""
    safe = getattr(torch.serialization, "safe_globals", None)
    if safe is None:    # torch < 2.5
        torch.serialization.add_safe_globals([argparse.Namespace])
        return torch.load(path, map_location="cpu", weights_only=True)
    with safe([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_released(path: str | Path, model_name: str, cond: bool = False, ema: bool = True,
                  **model_kwargs: object) -> nn.Module:
    """Load an authors' released checkpoint (dict with 'model', 'ema', 'opt', 'args') into our model.

    Takes the 'ema' weights unless ema=False. The model is built from the registry by
    `model_name` (CIFAR-10 shape unless model_kwargs say otherwise) and returned in eval mode.
    Raises FileNotFoundError for a missing file and ValueError, naming the file, for one that is
    truncated, not a torch.save dict of that layout, or whose tensors do not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        ckpt = _load_tensors_only(path)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: holds objects other than tensors and plain values, which are not "
                         f"loaded (weights_only): {first_line(e)}") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise ValueError(f"{path}: not a readable torch.save checkpoint (truncated or corrupt?): "
                         f"{first_line(e)}") from e
    key = "ema" if ema else "model"
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get(key), dict):
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: expected the release layout, a dict with a '{key}' state dict "
                         f"(keys 'model', 'ema', 'opt', 'args'); found {found}")
    state = ckpt[key]
    model = build_model(model_name, cond=cond, **model_kwargs)
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    mismatched = sorted(k for k in set(ours) & set(state)
                        if not isinstance(state[k], Tensor) or state[k].shape != ours[k].shape)
    if missing or unexpected or mismatched:
        hint = ""
        if "y_embedder.embedding_table.weight" in unexpected:
            hint = " It is a class-conditional checkpoint: pass cond=True."
        elif "y_embedder.embedding_table.weight" in missing:
            hint = " It is an unconditional checkpoint: pass cond=False."
        detail = "; ".join(f"{label}: {keys[:4]}{' ...' if len(keys) > 4 else ''}"
                           for label, keys in (("missing", missing), ("unexpected", unexpected),
                                               ("wrong shape", mismatched)) if keys)
        raise ValueError(f"{path}: '{key}' weights do not fit {model_name} (cond={cond}): {detail}.{hint}")
    model.load_state_dict(state)
    return model.eval()


def model_kwargs(model: nn.Module) -> dict:
    """What `build_model` needs, beside the name, to rebuild `model` (a GET's DEQ recipe included)."""
    kw = dict(input_size=model.input_size, in_channels=model.in_channels, cond=model.cond,
              num_classes=model.num_classes)
    if isinstance(model, GET):
        kw["deq"] = dataclasses.asdict(model.deq_cfg)
    return kw


def student_blob(model_name: str, ema: nn.Module, summary: dict) -> dict:
    """What `load_student` reads (student.pt, snapshots): the EMA weights and how to rebuild the model."""
    return {"model_name": model_name, "model_kwargs": model_kwargs(ema), "ema": ema.state_dict(), "summary": summary}


def load_student(path: str | Path) -> nn.Module:
    """The EMA student saved at the end of a run (out/student.pt) or a snapshot
    (out/snapshots/step-*.pt), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no student at {path}: run the distillation first")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(blob["model_name"], **blob["model_kwargs"])
        model.load_state_dict(blob["ema"])
    except Exception as e:   # truncated, another kind of file, or weights of another model
        raise ValueError(f"{path}: not a student saved by getlib.train ({type(e).__name__}: {first_line(e)})") from e
    return model.eval().requires_grad_(False)
