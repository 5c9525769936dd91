"""Training throughput and peak memory of the distillation loop on this CPU.

Runs `getlib.train.train` itself (data loading, latents regenerated from seeds, EMA, logging) on a
synthetic pair set of the right shape, each case in a fresh process, and reads images/s from the
run's metrics (median over logged intervals after the first) and the process's peak resident memory.

    python benchmarks/train_cpu.py          # -> benchmarks/results/train_cpu.{md,csv}
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {
    # name: (model, image shape, batch, steps, deq overrides)
    "GET-P/2 digits, paper recipe": ("GET-P/2", (1, 8, 8), 128, 40, {}),
    "GET-P/2 digits, no-grad 5 + 1 tracked": ("GET-P/2", (1, 8, 8), 128, 40, {"f_max_iter": 5, "grad_steps": 1}),
    "ViT-P/2 digits": ("ViT-P/2", (1, 8, 8), 128, 40, {}),
    "GET-T/2 CIFAR, paper recipe": ("GET-T/2", (3, 32, 32), 16, 6, {}),
}


def child(case: str) -> dict:
    import torch

    from getlib.edm import SamplerConfig
    from getlib.pairs import PairSpec, generate_pairs
    from getlib.runs import training_log
    from getlib.train import TrainConfig, train

    model, shape, batch, steps, deq = CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        spec = PairSpec(num_pairs=max(4 * batch, 256), image_shape=shape, shard_size=max(4 * batch, 256))
        generate_pairs(lambda x, s, c: torch.tanh(x.float()), Path(tmp) / "pairs", spec, {"kind": "synthetic"},
                       SamplerConfig(num_steps=1))
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        summary = train(TrainConfig(pairs=str(Path(tmp) / "pairs"), out=str(Path(tmp) / "run"), model=model,
                                    deq=deq, batch_size=batch, max_steps=steps, log_every=max(steps // 8, 1),
                                    ckpt_every=10 ** 6, sample_every=10 ** 6, num_samples=4, progress=False))
        rates = [float(r["images_per_s"]) for r in training_log(Path(tmp) / "run")][1:-1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"case": case, "model": model, "params": summary["params"], "batch": batch, "steps": steps,
            "images_per_s": round(statistics.median(rates), 1),
            "s_per_step": round(batch / statistics.median(rates), 3),
            "peak_rss_mib": round(peak / 1024), "peak_growth_mib": round((peak - rss0) / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    import torch
    rows = []
    for case in CASES:
        res = subprocess.run([sys.executable, __file__, "--child", case], check=True, capture_output=True, text=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "train_cpu.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"# Distillation training on CPU ({datetime.date.today()}, {platform.machine()}, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__})", "",
             "getlib.train.train on synthetic pairs, float32; images/s is the median over logged intervals "
             "(the first and last dropped); peak growth is the process's peak resident memory over its size "
             "before training. Written by benchmarks/train_cpu.py.", "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    (args.out / "train_cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
