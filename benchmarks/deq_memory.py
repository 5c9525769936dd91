"""Time and peak memory of one GET training step: plain unrolled vs memory-efficient (checkpointed).

The paper's recipe (6 tracked unrolled iterations, all 6 states supervised, L1 + fixed-point
correction, AdamW) at the embedded scale (GET-P/2, 8x8x1 digits) and at GET-T/2 scale (CIFAR
32x32x3, small batch). Each (config, mode) runs in a fresh process so that peak memory is its own:
on CPU the growth of the peak resident set over the process's resident set before the first step,
on CUDA torch.cuda.max_memory_allocated. Time: median of the timed steps after warm-up steps.

    python benchmarks/deq_memory.py                 # writes benchmarks/results/deq_memory.{md,csv}
    python benchmarks/deq_memory.py --device cuda --out /tmp/bench
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
import time
from pathlib import Path

CASES = {
    "embedded": dict(model="GET-P/2", input_size=8, in_channels=1, batch=128),
    "GET-T/2": dict(model="GET-T/2", input_size=32, in_channels=3, batch=8),
}
MODES = {"unrolled": False, "memory-efficient": True}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def one_case(case: str, mode: str, device: str, warmup: int, steps: int) -> dict:
    """Runs inside the child process."""
    import torch

    from getlib.deq import fp_correction
    from getlib.models import GET_models

    c = CASES[case]
    torch.manual_seed(0)
    model = GET_models[c["model"]](input_size=c["input_size"], in_channels=c["in_channels"],
                                   deq=dict(memory_efficient=MODES[mode])).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    shape = (c["batch"], c["in_channels"], c["input_size"], c["input_size"])
    noise, target = torch.randn(shape, device=device), torch.randn(shape, device=device)
    l1 = lambda a, b: (a - b).abs().mean()  # noqa: E731

    def step():
        loss, _ = fp_correction(l1, model(noise), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def saved_for_backward_mib() -> float:
        """Bytes autograd keeps for backward in one forward pass (activations, not weights)."""
        total = [0]

        def pack(t):
            if not isinstance(t, torch.nn.Parameter):
                total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fp_correction(l1, model(noise), target)
        return total[0] / 2 ** 20

    activations = saved_for_backward_mib()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    before = rss_bytes()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    times = []
    for i in range(warmup + steps):
        sync()
        t = time.perf_counter()
        step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return dict(case=case, model=c["model"], batch=c["batch"], mode=mode,
                s_per_step=statistics.median(times), peak_mib=peak / 2 ** 20, saved_mib=activations)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one_case(*args.child, args.device, args.warmup, args.steps)))
        return

    import torch
    rows = []
    for case in CASES:
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--child", case, mode, "--device", args.device,
                                  "--warmup", str(args.warmup), "--steps", str(args.steps)],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    for r in rows:
        base = next(b for b in rows if b["case"] == r["case"] and b["mode"] == "unrolled")
        r["memory_vs_unrolled"] = r["peak_mib"] / base["peak_mib"]
        r["saved_vs_unrolled"] = r["saved_mib"] / base["saved_mib"]
        r["time_vs_unrolled"] = r["s_per_step"] / base["s_per_step"]

    hardware = (torch.cuda.get_device_name() if args.device == "cuda"
                else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    stamp = f"{datetime.date.today()}, {hardware}, torch {torch.__version__}"
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "deq_memory.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"# GET training step: unrolled vs memory-efficient ({args.device})", "",
             f"Measured {stamp}; median of {args.steps} steps after {args.warmup} warm-up steps; "
             "the paper's recipe (6 tracked iterations, 6 supervised states, AdamW). Peak memory: growth of "
             "the process's peak over its size before training (activations, gradients and AdamW state); "
             "saved for backward: the tensors autograd keeps in one forward pass (activations alone).", "",
             "| case | model | batch | mode | s/step | peak memory (MiB) | saved for backward (MiB) "
             "| peak vs unrolled | saved vs unrolled | time vs unrolled |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['model']} | {r['batch']} | {r['mode']} | {r['s_per_step']:.3f} | "
              f"{r['peak_mib']:.0f} | {r['saved_mib']:.0f} | {r['memory_vs_unrolled']:.2f} | "
              f"{r['saved_vs_unrolled']:.2f} | {r['time_vs_unrolled']:.2f} |" for r in rows]
    (args.out / "deq_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
