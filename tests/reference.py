"""An independent, functional GET written from docs/paper.md against the release's state-dict layout.

It shares no code with getlib: explicit LayerNorm, softmax attention and erf-GELU on raw tensors,
and torchdeq's own fixed-point solver for sampling. Tests use it as the "authors' model" that our
GET must reproduce for the same weights, noise and z0.
"""
import math

import torch
from torchdeq.solver import get_solver


def layer_norm(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def linear(x, sd, name, bias=True):
    y = x @ sd[f"{name}.weight"].T
    return y + sd[f"{name}.bias"] if bias else y


def block(sd, prefix, x, heads, c=None, u=None):
    B, T, D = x.shape
    h = layer_norm(x, sd[f"{prefix}.norm1.weight"], sd[f"{prefix}.norm1.bias"])
    qkv = linear(h, sd, f"{prefix}.attn.qkv")
    if c is not None:
        qkv = qkv + c
    if u is not None:
        qkv = qkv + u
    q, k, v = qkv.reshape(B, T, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // heads), dim=-1)
    a = (attn @ v).transpose(1, 2).reshape(B, T, D)
    x = x + linear(a, sd, f"{prefix}.attn.proj")
    h = layer_norm(x, sd[f"{prefix}.norm2.weight"], sd[f"{prefix}.norm2.bias"])
    h = linear(h, sd, f"{prefix}.mlp.fc1")
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    return x + linear(h, sd, f"{prefix}.mlp.fc2")


def reference_get(sd, noise, heads, labels=None, z0=None, n_iter=6, tol=1e-3, train=False):
    """Eval: decoded lowest-residual iterate of torchdeq's fixed_point_iter; train: the 6 decoded
    unrolled states z_1..z_6 from z0."""
    w = sd["x_embedder.proj.weight"]
    D, C, p = w.shape[0], w.shape[1], w.shape[2]
    B, _, H, W = noise.shape
    g = H // p
    # patchify as a matrix product: patch (i, j) -> row-major token i*g + j
    patches = noise.reshape(B, C, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * p * p)
    x = patches @ w.reshape(D, -1).T + sd["x_embedder.proj.bias"] + sd["pos_embed"]
    c = sd["y_embedder.embedding_table.weight"][labels][:, None] if labels is not None else None
    n_inj = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    n_deq = len({k.split(".")[1] for k in sd if k.startswith("deq_blocks.")})
    for i in range(n_inj):
        x = block(sd, f"blocks.{i}", x, heads, c)
    u = (x @ sd["qkv_inj.weight"].T).chunk(n_deq, dim=-1)

    def f(z):
        for j in range(n_deq):
            z = block(sd, f"deq_blocks.{j}", z, heads, c, u[j])
        return z

    def decode(z):
        y = linear(layer_norm(z, sd["final_layer.norm_final.weight"], sd["final_layer.norm_final.bias"]),
                   sd, "final_layer.linear")
        y = y.reshape(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4)
        return y.reshape(B, C, g * p, g * p)

    if train:
        states, z = [], z0
        for _ in range(n_iter):
            z = f(z)
            states.append(decode(z))
        return states
    z_star, _, _ = get_solver("fixed_point_iter")(f, z0, max_iter=n_iter, tol=tol, stop_mode="abs")
    return decode(z_star)
