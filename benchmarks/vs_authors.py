"""Our GET training step against the authors' implementation, side by side in one process.

Needs a local checkout of the authors' code (github.com/locuslab/get, MIT; not part of this repo)
and its dependencies timm and torchdeq. Both models are built for the same config (default GET-T/2,
CIFAR shape), given the same weights, and timed alternately on the paper's training step (6 tracked
unrolled states, fixed-point correction, L1, AdamW) at the same batch; it also checks that both give
the same outputs for the same weights, noise and z0.

    python benchmarks/vs_authors.py --authors-repo ../get [--batch 16 --steps 4]
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from getlib.deq import fp_correction
from getlib.models import GET_models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--authors-repo", type=Path, required=True)
    ap.add_argument("--model", default="GET-T/2")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--note", default="", help="how the authors' code was obtained (written into the table)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.authors_repo.resolve()))
    from models.get import GET_models as THEIR_MODELS  # noqa: E402  (the authors' module)
    from torchdeq import add_deq_args  # noqa: E402

    parser = argparse.ArgumentParser()
    add_deq_args(parser)
    parser.add_argument("--mem", action="store_true")
    their_args = parser.parse_args("--grad 6 --sup_gap 1 --f_max_iter 0 --eval_f_max_iter 6 --norm_type none".split())
    torch.manual_seed(0)
    theirs = THEIR_MODELS[args.model](their_args).train()
    ours = GET_models[args.model]().train()
    ours.load_state_dict(theirs.state_dict())

    noise, target = torch.randn(args.batch, 3, 32, 32), torch.randn(args.batch, 3, 32, 32)
    z0 = torch.randn(args.batch, ours.grid ** 2, ours.hidden_size)
    with torch.no_grad():
        same = max((a - b).abs().max().item() for a, b in zip(theirs(noise, None, z0), ours(noise, z0=z0)))
    l1 = lambda p, t: (p - t).abs().mean()  # noqa: E731
    timings = {"authors": [], "getlib": []}
    models = {"authors": (theirs, lambda m: m(noise)), "getlib": (ours, lambda m: m(noise))}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0) for k, (m, _) in models.items()}
    for i in range(args.steps + 1):
        for name, (model, call) in models.items():
            start = time.perf_counter()
            loss, _ = fp_correction(l1, call(model), target)
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
            if i:  # the first step of each is warm-up
                timings[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in timings.items()}
    lines = [f"# Training step: getlib vs the authors' implementation ({datetime.date.today()}, "
             f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__})", "",
             f"{args.model}, CIFAR shape, batch {args.batch}, the paper's recipe; median of {args.steps} steps each, "
             f"alternating, after one warm-up step. Same weights; largest output difference for the same noise "
             f"and z0: {same:.2e}. Written by benchmarks/vs_authors.py.", "",
             "| implementation | s/step | images/s |", "|---|---|---|"]
    lines += [f"| {k} | {v:.2f} | {args.batch / v:.2f} |" for k, v in med.items()]
    lines += ["", f"getlib / authors time ratio: {med['getlib'] / med['authors']:.2f}"]
    if args.note:
        lines += ["", f"Authors' code: {args.note}"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vs_authors.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
