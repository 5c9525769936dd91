"""GPU training throughput: GET-T/2 and GET-B/2 on random CIFAR-shaped pairs, fp32 vs bf16, eager vs compile.

The paper's training step (6 tracked unrolled states, fixed-point correction, L1, fused AdamW, TF32
on) at batch 128 for --steps steps after --warmup steps, per (model, precision, compile) case;
records images/s and peak allocated memory with the date and the GPU's name. A few minutes on one
modern GPU. Refuses to run without CUDA.

    python benchmarks/gpu_train.py [--steps 200]      # -> benchmarks/results/gpu_train.{md,csv}
"""
from __future__ import annotations

import argparse
import csv
import datetime
import time
from pathlib import Path

import torch

from getlib.deq import fp_correction
from getlib.models import GET_models, count_params


def run_case(name: str, precision: str, compiled: bool, batch: int, warmup: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = GET_models[name]().cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0, fused=True)
    net = torch.compile(model) if compiled else model
    noise = torch.randn(batch, 3, 32, 32, device="cuda")
    target = torch.randn(batch, 3, 32, 32, device="cuda").clamp(-1, 1)
    z0 = torch.randn(batch, 256, model.hidden_size, device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = fp_correction(lambda p, t: (p.float() - t).abs().mean(), net(noise, z0=z0), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"model": name, "params": count_params(model), "precision": precision, "compile": compiled,
            "batch": batch, "images_per_s": round(batch * steps / seconds, 1),
            "ms_per_step": round(1000 * seconds / steps, 1),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["GET-T/2", "GET-B/2"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu_train.py needs a CUDA GPU; none is visible here")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    rows = []
    for name in args.models:
        for precision, compiled in (("fp32", False), ("bf16", False), ("bf16", True)):
            rows.append(run_case(name, precision, compiled, args.batch, args.warmup, args.steps))
            print(rows[-1], flush=True)
    gpu = torch.cuda.get_device_name()
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "gpu_train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["date", "gpu", "torch", *rows[0]])
        w.writeheader()
        w.writerows({"date": str(datetime.date.today()), "gpu": gpu, "torch": torch.__version__, **r} for r in rows)
    lines = [f"# GET training on {gpu} ({datetime.date.today()}, torch {torch.__version__})", "",
             f"The paper's step (6 tracked states, L1, fused AdamW, TF32), random CIFAR-shaped pairs, batch "
             f"{args.batch}, {args.steps} timed steps after {args.warmup}. Written by benchmarks/gpu_train.py.", "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    (args.out / "gpu_train.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
