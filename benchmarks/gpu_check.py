"""The prepared GPU check: every CUDA path of the project in one command, a few minutes on one GPU.

Parts (each saved to <out>/gpu_check.json as soon as it finishes; --resume skips finished ones):
  correctness  GET-T/2 and ViT-B/2: bf16 autocast against fp32 (eval forward), the SDPA kernel
               against explicit attention, one training step compiled against eager, the
               memory-efficient DEQ's gradients against the plain ones
  e2e          the smoke profile's stages (data ... figures) with pairs, distill and evaluate on the
               device
  throughput   the paper's training step at batch 128, CIFAR shape: GET-T/2, GET-B/2, ViT-B/2 in
               fp32 (TF32 matmuls), bf16 autocast, bf16 + torch.compile; images/s, step time, peak
               memory, model FLOP utilisation against the GPU's dense bf16 peak (named in the table)
  ddp          `torchrun -m getlib.train` on every GPU present (NCCL), a few steps on toy pairs
and writes <out>/gpu.md with the machine, torch version and the command.

    python benchmarks/gpu_check.py                      # CUDA: -> benchmarks/results/gpu.md
    python benchmarks/gpu_check.py --parts throughput --resume
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-dry   # the same code on CPU, toy sizes (CI)

Needs torch >= 2.4 and the project's own dependencies (clean-fid for the e2e part: carry its wheel
to a machine without it). Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from getlib.deq import LOSSES, fp_correction  # noqa: E402
from getlib.evaluate import training_cost  # noqa: E402
from getlib.io import atomic_write, atomic_write_json, read_csv  # noqa: E402
from getlib.models import GET, build_model, count_params  # noqa: E402

PARTS = ("correctness", "e2e", "throughput", "ddp")
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets; MFU is stated against these.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0,
                    "L40S": 362.1, "L4": 121.0, "A10": 125.0}


def sizes(dry: bool) -> dict:
    """What each part runs: the paper's CIFAR-10 models on a GPU, digits-sized ones for the dry run."""
    if dry:
        return dict(shape=dict(input_size=8, in_channels=1), models=["GET-P/2", "ViT-P/2"], batch=8, steps=2, warmup=1)
    return dict(shape={}, models=["GET-T/2", "GET-B/2", "ViT-B/2"], batch=128, steps=30, warmup=5)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def untrained(name: str, shape: dict, device: torch.device, **kwargs):
    """The model with its zero-initialised layers (the decoder) filled with small random values, so
    that outputs and gradients are not identically zero; the same weights for every call."""
    torch.manual_seed(0)
    model = build_model(name, **shape, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    return model.to(device)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


# ------------------------------------------------------------------------------------------------
# Parts
# ------------------------------------------------------------------------------------------------

def correctness(device: torch.device, dry: bool) -> list[dict]:
    s = sizes(dry)
    rows = []
    names = s["models"][:1] + s["models"][-1:]     # one GET, one ViT
    for name in names:
        model = untrained(name, s["shape"], device).eval()
        c, h = model.in_channels, model.input_size
        noise = torch.randn(4, c, h, h, device=device)
        z0 = {"z0": model.initial_states(range(4)).to(device)} if isinstance(model, GET) else {}
        with torch.no_grad():
            ref = model(noise, **z0)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                low = model(noise, **z0)
        rows.append(check(name, "bf16 autocast vs fp32 (eval images)", rel(low, ref), 5e-2))
    attn = build_model(names[0], **s["shape"]).to(device).blocks[0].attn
    x = torch.randn(4, 16, attn.qkv.in_features, device=device)
    B, T, D = x.shape
    q, k, v = attn.qkv(x).view(B, T, 3, attn.num_heads, D // attn.num_heads).permute(2, 0, 3, 1, 4)
    explicit = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v
    for dtype in (torch.float32, torch.bfloat16):
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            fast = F.scaled_dot_product_attention(q, k, v)
        rows.append(check("attention", f"SDPA vs explicit ({str(dtype).split('.')[1]})", rel(fast, explicit),
                          1e-4 if dtype == torch.float32 else 2e-2))
    for name in names:
        losses = []
        for compiled in (False, True):
            model = untrained(name, s["shape"], device).train()
            net = torch.compile(model, backend="inductor" if device.type == "cuda" else "aot_eager") if compiled else model
            losses.append(train_step(net, model, device, batch=4, amp=False)())
        rows.append(check(name, "training step: compiled vs eager loss (fp32)", abs(losses[1] - losses[0]) / abs(losses[0]), 1e-4))
    plain = untrained(names[0], s["shape"], device).train()
    efficient = untrained(names[0], s["shape"], device, deq={"memory_efficient": True}).train()
    grads = []
    for model in (plain, efficient):
        train_step(model, model, device, batch=4, amp=False, step=False)()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    rows.append(check(names[0], "memory-efficient vs plain gradients (fp32)", rel(grads[1], grads[0]), 1e-5))
    return rows


def check(model: str, what: str, error: float, tolerance: float) -> dict:
    return {"model": model, "check": what, "relative_error": float(f"{error:.3g}"), "tolerance": tolerance,
            "ok": bool(error <= tolerance)}


def train_step(net, model, device: torch.device, batch: int, amp: bool, step: bool = True):
    """The paper's training step (L1 on every supervised state, fixed-point correction 0.8, AdamW)
    on fixed random data; returns a function that runs it and returns the loss."""
    c, h = model.in_channels, model.input_size
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(batch, c, h, h, generator=g).to(device)
    target = torch.randn(batch, c, h, h, generator=g).clamp(-1, 1).to(device)
    z0 = {"z0": model.initial_states(range(batch)).to(device)} if isinstance(model, GET) else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=device.type == "cuda")

    def run() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = fp_correction(lambda p, t: LOSSES["l1"](p.float(), t), net(noise, **z0), target, 0.8)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step:
            opt.step()
        return float(loss)
    return run


def throughput(device: torch.device, dry: bool) -> list[dict]:
    s = sizes(dry)
    peak_name, peak = bf16_peak(device)
    rows = []
    for name in s["models"]:
        flops = training_cost(build_model(name, **s["shape"]))["train_gflops_per_image"] * 1e9
        for precision, compiled in (("fp32", False), ("bf16", False), ("bf16", True)):
            torch.manual_seed(0)
            model = build_model(name, **s["shape"]).to(device).train()
            net = torch.compile(model, backend="inductor" if device.type == "cuda" else "aot_eager") if compiled else model
            step = train_step(net, model, device, s["batch"], amp=precision == "bf16")
            for _ in range(s["warmup"]):
                step()
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(s["steps"]):
                step()
            sync(device)
            seconds = (time.perf_counter() - start) / s["steps"]
            images_per_s = s["batch"] / seconds
            rows.append({"model": name, "params": count_params(model), "precision": precision, "compile": compiled,
                         "batch": s["batch"], "images_per_s": round(images_per_s, 1), "ms_per_step": round(1e3 * seconds, 2),
                         "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if device.type == "cuda" else None,
                         "train_gflops_per_image": round(flops / 1e9, 3),
                         "mfu_vs_bf16_peak": round(flops * images_per_s / (peak * 1e12), 4) if peak else None,
                         "peak_used": peak_name})
    return rows


def bf16_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "none (CPU)", None
    name = torch.cuda.get_device_name(device)
    for key, tflops in BF16_PEAK_TFLOPS.items():
        if key.replace(" ", "").lower() in name.replace(" ", "").lower():
            return f"{key} dense bf16 {tflops} TFLOP/s", tflops
    return f"unknown GPU {name!r}", None


def e2e(device: torch.device, dry: bool) -> list[dict]:
    from getlib.config import load_params
    from getlib.stages.data import prepare_data
    from getlib.stages.distill import distill
    from getlib.stages.evaluate import evaluate
    from getlib.stages.features import make_features
    from getlib.stages.figures import make_figures
    from getlib.stages.pairs import make_pairs
    from getlib.stages.teacher import make_teacher

    raw = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    raw["pairs"]["device"] = raw["evaluate"]["device"] = raw["distill"]["device"] = device.type
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "dvc.yaml").write_text("")
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(raw))
        p = load_params(Path(tmp) / "params.yaml")
        stages = [("data", lambda: prepare_data(p)), ("features", lambda: make_features(p))]
        stages += [(f"teacher@{c}", lambda c=c: make_teacher(p, c)) for c in p.conditions]
        stages += [(f"pairs@{c}", lambda c=c: make_pairs(p, c)) for c in p.conditions]
        stages += [(f"distill@{k}", lambda k=k: distill(p, k)) for k in p.students]
        stages += [("evaluate", lambda: evaluate(p)), ("figures", lambda: make_figures(p))]
        for name, run in stages:
            start = time.perf_counter()
            result = run()
            row = {"stage": name, "seconds": round(time.perf_counter() - start, 2)}
            if name == "evaluate":
                row["fids"] = {r["source"]: round(r["fid"], 2) for r in result["comparison"]}
                row["ok"] = all(math.isfinite(r["fid"]) for r in result["comparison"])
            rows.append(row)
    return rows


def ddp(device: torch.device, dry: bool) -> list[dict]:
    from getlib.edm import SamplerConfig
    from getlib.pairs import PairSpec, generate_pairs

    nproc = torch.cuda.device_count() if device.type == "cuda" else 2
    s = sizes(dry)
    shape = (1, 8, 8) if dry else (3, 32, 32)
    with tempfile.TemporaryDirectory() as tmp:
        spec = PairSpec(num_pairs=64 * nproc, image_shape=shape, shard_size=32, batch_size=32)
        generate_pairs(lambda x, sigma, labels: torch.tanh(x.float()), Path(tmp) / "pairs", spec, {"kind": "toy"},
                       SamplerConfig(num_steps=2))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "getlib.train", "--pairs", str(Path(tmp) / "pairs"), "--out", str(Path(tmp) / "run"),
               "--model", s["models"][0], "--batch_size", str(8 * nproc), "--max_steps", "4", "--log_every", "1",
               "--ckpt_every", "2", "--sample_every", "4", "--num_samples", "4", "--device", device.type,
               "--progress", "false"]
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        seconds = time.perf_counter() - start
        run = Path(tmp) / "run"
        ok = out.returncode == 0 and (run / "run.json").is_file()
        loss = float(read_csv(run / "metrics.csv")[-1]["loss"]) if ok else None
        ok = ok and json.loads((run / "run.json").read_text())["steps"] == 4 and math.isfinite(loss)
        if not ok:
            print(out.stdout[-3000:], out.stderr[-3000:], sep="\n", file=sys.stderr)
    return [{"backend": "nccl" if device.type == "cuda" else "gloo", "processes": nproc, "model": s["models"][0],
             "steps": 4, "seconds": round(seconds, 1), "final_loss": loss, "ok": ok}]


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------

def machine(device: torch.device) -> dict:
    info = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "python": platform.python_version(),
            "cpu": f"{platform.machine()}, {os.cpu_count()} threads"}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), gpus=torch.cuda.device_count(), cuda=torch.version.cuda)
    return info


def table(rows: list[dict]) -> list[str]:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + [
        "| " + " | ".join("n/a" if r.get(c) is None else str(r.get(c)) for c in cols) + " |" for r in rows]


def report(state: dict, path: Path) -> None:
    lines = ["# GPU check (benchmarks/gpu_check.py)", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in state["machine"].items()) + ".",
             f"Command: `{state['command']}`.", ""]
    for part in PARTS:
        if part in state["parts"]:
            lines += [f"## {part}", ""] + table(state["parts"][part]) + [""]
    atomic_write(path, lambda f: f.write("\n".join(lines).encode()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--dry-run", action="store_true", help="on CPU at toy sizes (what CI runs)")
    ap.add_argument("--out", type=Path, help="folder for gpu_check.json and gpu.md "
                                             "(default: benchmarks/results on a GPU, a temporary folder for --dry-run)")
    ap.add_argument("--resume", action="store_true", help="keep the parts already in <out>/gpu_check.json")
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        ap.error("no GPU visible to torch: run with --dry-run to check the code path on CPU")
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    out = args.out or (Path(tempfile.mkdtemp(prefix="gpu-check-")) if args.dry_run else ROOT / "benchmarks" / "results")
    saved = out / "gpu_check.json"
    state = json.loads(saved.read_text()) if args.resume and saved.is_file() else {"parts": {}}
    state.update(machine=machine(device), command="python benchmarks/gpu_check.py " + " ".join(argv or sys.argv[1:]))
    for part in args.parts:
        if part in state["parts"]:
            print(f"{part}: kept from {saved}", flush=True)
            continue
        start = time.perf_counter()
        state["parts"][part] = globals()[part](device, args.dry_run)
        print(f"{part}: {time.perf_counter() - start:.1f} s", flush=True)
        atomic_write_json(saved, state)
        report(state, out / "gpu.md")
    failed = [(part, r) for part, rows in state["parts"].items() for r in rows if r.get("ok") is False]
    for part, r in failed:
        print(f"FAILED {part}: {r}", file=sys.stderr)
    print(f"wrote {out / 'gpu.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
