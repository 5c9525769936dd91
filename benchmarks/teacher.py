"""The embedded teacher on this machine: training time, pairs per second, and its FID.

Trains the digits feature network (held-out accuracy) and the teacher with its default settings
(unconditional; --cond for the class-conditional one), then samples N images with EDM's Heun
sampler (18 steps, 35 network evaluations) and reports pairs/s and FID in the feature network's
128-d space (clean-fid's fid_from_feats), next to the real-data floor.

    python benchmarks/teacher.py [--cond] [--samples 2000]   # -> benchmarks/results/teacher.{md,csv}
"""
from __future__ import annotations

import argparse
import csv
import datetime
import platform
import tempfile
import time
from pathlib import Path

import torch
from cleanfid.fid import fid_from_feats

from getlib.data import digits
from getlib.edm import SamplerConfig, edm_sampler, latents_for_seeds
from getlib.checkpoints import load_teacher
from getlib.data import split_indices
from getlib.features import image_features, train_feature_net
from getlib.teacher import TeacherConfig, train_teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cond", action="store_true")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()

    x, y = digits()
    train_idx, test_idx = split_indices(len(x), 450)
    fnet, freport = train_feature_net(x, y, train_idx, test_idx)
    floor = fid_from_feats(image_features(fnet, x[train_idx]).numpy(), image_features(fnet, x[test_idx]).numpy())

    cfg = TeacherConfig(cond=args.cond)
    with tempfile.TemporaryDirectory() as tmp:
        summary = train_teacher(x, y, cfg, Path(tmp) / "teacher.pt")
        teacher = load_teacher(Path(tmp) / "teacher.pt")
    latents, labels = latents_for_seeds(range(args.samples), (1, 8, 8), 10 if args.cond else None)
    start = time.perf_counter()
    images = torch.cat([edm_sampler(teacher, latents[i:i + args.batch],
                                    None if labels is None else labels[i:i + args.batch])
                        for i in range(0, args.samples, args.batch)]).float()
    sample_s = time.perf_counter() - start
    fid = fid_from_feats(image_features(fnet, images).numpy(), image_features(fnet, x).numpy())
    # the same counts as the floor (450 generated vs the 1347 training digits): comparable with it
    fid_matched = fid_from_feats(image_features(fnet, images[:len(test_idx)]).numpy(),
                                 image_features(fnet, x[train_idx]).numpy())

    row = dict(date=str(datetime.date.today()), machine=f"{platform.machine()}, {torch.get_num_threads()} threads",
               teacher="cond" if args.cond else "uncond",
               params=sum(p.numel() for p in teacher.parameters()), train_steps=summary["steps"],
               batch=cfg.batch_size, train_s=round(summary["seconds"], 1),
               s_per_step=round(summary["seconds"] / summary["steps"], 3),
               nfe=SamplerConfig().nfe, pairs_per_s=round(args.samples / sample_s, 1),
               fid=round(float(fid), 2), fid_samples=f"{args.samples} vs {len(x)} real",
               fid_at_floor_counts=round(float(fid_matched), 2),
               floor_fid=round(float(floor), 2), floor_samples=f"{len(test_idx)} held-out vs {len(train_idx)} train",
               feature_net_accuracy=round(freport["held_out_accuracy"], 4))
    print(row)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "teacher.csv"
    rows = list(csv.DictReader(open(path))) if path.exists() else []
    rows = [r for r in rows if r["teacher"] != row["teacher"]] + [{k: str(v) for k, v in row.items()}]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        w.writeheader()
        w.writerows(rows)
    lines = ["# The embedded teacher (digits, 8x8x1)", "",
             "EDM-preconditioned TinyUNet, default TeacherConfig; Heun sampler, 18 steps = 35 NFE, batch "
             f"{args.batch}. FID in the 128-d feature space of the digits classifier (clean-fid's fid_from_feats); "
             "the floor compares real train and held-out digits. Written by benchmarks/teacher.py.", "",
             "| " + " | ".join(row) + " |", "|" + "---|" * len(row)]
    lines += ["| " + " | ".join(r[k] for k in row) + " |" for r in rows]
    (args.out / "teacher.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
