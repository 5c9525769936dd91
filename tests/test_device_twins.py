"""CPU twins of the paths that differ on a GPU: bf16 autocast, the SDPA attention kernel, a
torch.compile'd training step (the DDP path's twin is test_train's two gloo ranks), and the prepared
GPU check itself, run on the CPU at toy size (`benchmarks/gpu_check.py --dry-run`)."""
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from getlib.deq import LOSSES, fp_correction
from getlib.models import GET, build_model
from conftest import ROOT

DIGITS = dict(input_size=8, in_channels=1)


def untrained(name):
    """A model whose zero-initialised layers (the paper's decoder, adaLN-free gates) hold small random
    values instead, so that its output is not identically zero."""
    torch.manual_seed(0)
    model = build_model(name, **DIGITS)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and not p.any():
                p.normal_(0, 0.02)
    return model


def batch(model, n=4):
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(n, model.in_channels, model.input_size, model.input_size, generator=g)
    target = torch.randn(noise.shape, generator=g).clamp(-1, 1)
    z0 = {"z0": model.initial_states(range(n))} if isinstance(model, GET) else {}
    return noise, target, z0


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("name", ["GET-P/2", "ViT-P/2"])
def test_bf16_autocast_stays_close_to_fp32(name):
    """What amp does on CUDA, here with CPU autocast: the same modules, bf16 matmuls."""
    model = untrained(name).eval()
    noise, _, z0 = batch(model)
    with torch.no_grad():
        full = model(noise, **z0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(noise, **z0)
    assert 0 < rel(half, full) < 5e-2     # autocast took effect, and stays within bf16's precision


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_the_sdpa_kernel_equals_explicit_attention(dtype, tolerance):
    attn = build_model("GET-P/2", **DIGITS).blocks[0].attn
    x = torch.randn(4, 16, attn.qkv.in_features)
    B, T, D = x.shape
    with torch.no_grad():
        q, k, v = attn.qkv(x).view(B, T, 3, attn.num_heads, D // attn.num_heads).permute(2, 0, 3, 1, 4)
        explicit = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v
        fast = F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype))
    assert rel(fast, explicit) < tolerance


@pytest.mark.parametrize("name", ["GET-P/2", "ViT-P/2"])
def test_a_compiled_training_step_equals_eager(name):
    """torch.compile through dynamo and AOT autograd (the 'aot_eager' backend: inductor's kernels
    need a compiler and a GPU to matter) gives the eager step's loss and gradients."""
    results = []
    for compiled in (False, True):
        model = untrained(name).train()
        net = torch.compile(model, backend="aot_eager") if compiled else model
        noise, target, z0 = batch(model)
        loss, _ = fp_correction(LOSSES["l1"], net(noise, **z0), target, 0.8)
        loss.backward()
        results.append((loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])))
    (loss, grad), (loss_c, grad_c) = results
    assert torch.allclose(loss_c, loss, rtol=1e-5) and rel(grad_c, grad) < 1e-4


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu_at_toy_size(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    state = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(state["parts"]) == ["correctness", "e2e", "throughput", "ddp"]
    assert all(r["ok"] for part in ("correctness", "ddp") for r in state["parts"][part])
    assert len(state["parts"]["throughput"]) == 6 and all(r["images_per_s"] > 0 for r in state["parts"]["throughput"])
    report = (tmp_path / "gpu.md").read_text()
    assert all(f"## {part}" in report for part in state["parts"]) and "torch" in report
    again = subprocess.run(cmd + ["--parts", "correctness", "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and "correctness: kept" in again.stdout
