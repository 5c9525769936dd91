"""torch.compile on the CPU for the distillation loop: what it costs to warm up, what it saves per
step, when it has paid back, and whether it changes what training computes.

For each case (GET-P/2 truncated + state norm, GET-P/2 paper recipe, ViT-P/2, and the same three at
patch 1: 64 tokens on the 8x8 digits instead of 16) it runs `getlib.train.train` itself (data
loading, z0 by key, EMA, logging; the default profile's settings: batch 64, lr 2e-3, warm-up 100,
EMA half-life 20k images) on one synthetic pair set, eager and with `compile: true`, each run in a
fresh process with one thread, logging every step. From the per-step wall-clock (timing.csv):

  first_s      the first logged interval (loader start and step 1; compiled: the compilation too)
  s_per_step   the median interval after the first --warmup-intervals ones
  warmup_s     the seconds the warm-up intervals took beyond as many steady steps
  break_even   the step after which the compiled run has spent less time in all than the eager one:
               (warmup_s compiled - warmup_s eager) / (s_per_step eager - s_per_step compiled)
               (none where compile is not faster per step)

The compiled run starts from an empty inductor cache (its own folder), so warmup_s is a cold
compile; the check runs below load the kernels it left there, and warmup_cached_s (break-even
cached) is what a second run of the same shapes pays. The checks, each case:

  loss         the compiled run's per-step losses against eager's: the largest relative difference
               over the run and at step 1 (same weights and batch: only the kernels differ)
  determinism  two compiled runs of --check-steps steps, separate processes: the same bytes of
               student.pt and metrics.csv, the same checkpoint tensors; and their logged rows
               equal the first rows of the cold-compiled timed run (cached kernels = fresh ones)
  resume       a compiled run killed at step 7 (after its step-4 checkpoint) and resumed in a new
               process ends with the same student.pt, metrics.csv and checkpoint tensors as the
               uninterrupted one

    python benchmarks/train_compile.py                       # -> benchmarks/results/train_compile.{md,csv}
    python benchmarks/train_compile.py --steps 20 --out /tmp/tc   # a quick look (not for the table)
    python benchmarks/train_compile.py --dry-run --out /tmp/tc    # toy size, for the tests

Measure on a quiet machine: the table records the load average before and after.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRUNCATED = {"recipe": "truncated", "state_norm": True}
PAPER = {"recipe": "paper"}
CASES = {
    # name: (model, deq settings)
    "GET-P/2 truncated+state-norm": ("GET-P/2", TRUNCATED),
    "GET-P/2 paper": ("GET-P/2", PAPER),
    "ViT-P/2": ("ViT-P/2", {}),
    "GET-P/1 truncated+state-norm": ("GET-P/1", TRUNCATED),
    "GET-P/1 paper": ("GET-P/1", PAPER),
    "ViT-P/1": ("ViT-P/1", {}),
}
# --dry-run: a 16-wide GET with one block of each kind (tests/test_compile.py trains the same model)
TOY_NAME = "GET-toy"
TOY_CONFIG = dict(hidden_size=16, depth=1, num_heads=2, mlp_ratio=2, deq_depth=1, deq_mlp_ratio=2)
TOY_CASES = {"toy GET truncated": (TOY_NAME, {"recipe": "truncated"})}
# the default profile's distillation settings (params.yaml `distill`), but for steps and logging
TRAINING = dict(lr=2e-3, warmup_steps=100, ema_halflife_images=20_000, ema_rampup_ratio=0.05, loss="l1", gamma=0.8)
PROFILE_STEPS = 4400          # params.yaml distill.max_steps: what net_s_profile is counted over
CHECK_CKPT_EVERY, KILL_AT = 4, 7
LOSS_TOLERANCE = 1e-3         # the largest relative loss difference, compiled vs eager, over the run
FIRST_LOSS_TOLERANCE = 1e-5   # ... at step 1


def register_toy_model() -> None:
    """Add TOY_NAME to the registries (in this process only)."""
    from functools import partial

    from getlib import models, settings
    settings.GET_CONFIGS[TOY_NAME] = TOY_CONFIG
    models.GET_models[TOY_NAME] = partial(models.GET, name=TOY_NAME, **TOY_CONFIG)


# ------------------------------------------------------------------------------------------------
# One run, in its own process
# ------------------------------------------------------------------------------------------------

def sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def tensor_digest(obj: object) -> str:
    """A digest of every tensor (and plain value) in a checkpoint, in key order."""
    import torch
    h = hashlib.sha256()

    def visit(x: object) -> None:
        if isinstance(x, torch.Tensor):
            h.update(str((x.dtype, tuple(x.shape))).encode())
            h.update(x.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                visit(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                visit(v)
        else:
            h.update(repr(x).encode())
    visit(obj)
    return h.hexdigest()


def child(spec: dict) -> dict:
    """Train one run as `spec` says; its timings, losses and the digests of what it wrote."""
    import torch
    torch.set_num_threads(1)

    import getlib.train as gt
    from getlib.runs import checkpoint_path, training_log

    if spec["toy"]:
        register_toy_model()
    out = Path(spec["out"])
    cfg = gt.TrainConfig(pairs=spec["pairs"], out=str(out), model=spec["model"], deq=spec["deq"],
                         batch_size=spec["batch"], max_steps=spec["steps"], log_every=1,
                         ckpt_every=spec.get("ckpt_every") or 10 ** 6, sample_every=10 ** 6, num_samples=4,
                         progress=False, compile=spec["compile"], seed=0, **TRAINING)
    if spec.get("kill_at"):
        real = gt._check_divergence

        def killed(value, recent, step, *a):
            if step == spec["kill_at"]:
                raise KeyboardInterrupt   # mid-run, after a checkpoint and before the next
            return real(value, recent, step, *a)
        gt._check_divergence = killed
        try:
            gt.train(cfg)
        except KeyboardInterrupt:
            return {"killed_at": spec["kill_at"]}
        raise RuntimeError("the run was to be killed but finished")
    t0 = time.perf_counter()
    summary = gt.train(cfg)
    total = time.perf_counter() - t0
    rows = training_log(out)
    seconds = [float(r["seconds"]) for r in rows]
    result = {"params": summary["params"], "total_s": total,
              "intervals": [b - a for a, b in zip([0.0, *seconds], seconds)],
              "losses": [float(r["loss"]) for r in rows],
              "metrics_rows": [{k: r[k] for k in ("step", "loss", "lr", "ema_beta", "grad_norm")} for r in rows],
              "student_sha256": sha256(out / "student.pt"), "metrics_sha256": sha256(out / "metrics.csv"),
              "checkpoint_digest": tensor_digest(torch.load(checkpoint_path(out), weights_only=True))}
    if spec["compile"]:
        from torch._dynamo.utils import counters
        result["graphs"] = int(counters["stats"]["unique_graphs"])
    if spec.get("cost"):
        from getlib.evaluate import attention_share
        from getlib.models import build_model, load_student, model_kwargs
        student = load_student(out / "student.pt")
        model = build_model(spec["model"], **model_kwargs(student))
        step = attention_share(model, training=True)
        result.update(tokens=model.grid ** 2, train_gflops_per_image=step["flops"] / 1e9,
                      attention_share_train=step["attention_share"])
    return result


def run_child(spec: dict, cache_dir: Path, compile_threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(cache_dir),
           "TORCHINDUCTOR_COMPILE_THREADS": str(compile_threads)}
    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         env=env)
    if res.returncode:
        raise RuntimeError(f"run {spec['model']} compile={spec['compile']} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# One case: eager, compiled (cold), and the checks (cached kernels)
# ------------------------------------------------------------------------------------------------

def timing(intervals: list[float], warmup: int) -> tuple[float, float]:
    """(s_per_step: the median interval after the warm-up ones, warmup_s: what those took beyond as many)."""
    steady = statistics.median(intervals[warmup:])
    return steady, sum(intervals[:warmup]) - warmup * steady


def break_even(warm_c: float, steady_c: float, warm_e: float, steady_e: float) -> int | None:
    """The step count from which the compiled run has taken less time in all (None: never)."""
    if steady_c >= steady_e:
        return None
    return max(0, math.ceil((warm_c - warm_e) / (steady_e - steady_c)))


def max_rel(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))


def run_case(name: str, model: str, deq: dict, args: argparse.Namespace, pairs: Path, work: Path) -> dict:
    common = dict(model=model, deq=deq, batch=args.batch, pairs=str(pairs), toy=args.dry_run)
    cache = Path(args.cache_dir) if args.cache_dir else work / "inductor-cache"   # empty: a cold compile
    runs = work / "runs"

    def go(tag: str, **spec) -> dict:
        return run_child({**common, **spec, "out": str(runs / tag)}, cache, args.compile_threads)

    eager = go("eager", steps=args.steps, compile=False, cost=True)
    comp = go("compile", steps=args.steps, compile=True)
    check = dict(steps=args.check_steps, compile=True, ckpt_every=CHECK_CKPT_EVERY)
    a, b = go("check-a", **check), go("check-b", **check)
    go("resumed", **check, kill_at=KILL_AT)
    resumed = go("resumed", **check)

    w = args.warmup_intervals
    steady_e, warm_e = timing(eager["intervals"], w)
    steady_c, warm_c = timing(comp["intervals"], w)
    warm_cached = sum(a["intervals"][:w]) - w * steady_c
    even, even_cached = break_even(warm_c, steady_c, warm_e, steady_e), break_even(warm_cached, steady_c, warm_e, steady_e)
    same = lambda x, y: all(x[k] == y[k] for k in ("student_sha256", "metrics_sha256", "checkpoint_digest"))  # noqa: E731
    loss_rel, first_rel = max_rel(comp["losses"], eager["losses"]), max_rel(comp["losses"][:1], eager["losses"][:1])
    row = {
        "case": name, "model": model, "recipe": deq.get("recipe", "-") + ("+state-norm" if deq.get("state_norm") else ""),
        "tokens": eager["tokens"], "params": eager["params"], "train_gflops_per_image": round(eager["train_gflops_per_image"], 4),
        "attention_share_train": round(eager["attention_share_train"], 4), "batch": args.batch, "steps": args.steps,
        "eager_first_s": round(eager["intervals"][0], 3), "eager_s_per_step": round(steady_e, 4),
        "compile_first_s": round(comp["intervals"][0], 2), "compile_s_per_step": round(steady_c, 4),
        "speedup": round(steady_e / steady_c, 3), "warmup_s": round(warm_c - warm_e, 2),
        "warmup_cached_s": round(warm_cached - warm_e, 2),
        "break_even_steps": "never" if even is None else even,
        "break_even_cached_steps": "never" if even_cached is None else even_cached,
        "net_s_profile": round((steady_e - steady_c) * PROFILE_STEPS - (warm_c - warm_e), 1),
        "graphs": comp.get("graphs"),
        "loss_max_rel_diff": float(f"{loss_rel:.3g}"), "loss_step1_rel_diff": float(f"{first_rel:.3g}"),
        "loss_within_tolerance": loss_rel <= LOSS_TOLERANCE and first_rel <= FIRST_LOSS_TOLERANCE,
        "deterministic": same(a, b) and a["metrics_rows"][:args.steps] == comp["metrics_rows"][:args.check_steps],
        "resume_exact": same(a, resumed),
    }
    if not args.keep:
        shutil.rmtree(runs, ignore_errors=True)
    return row


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------

def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_tables(rows: list[dict], out: Path, header: str, notes: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train_compile.csv", "w", newline="") as f:
        f.write(f"# {header}\n")
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"# torch.compile for the training loop on CPU ({header})", "", *notes, "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    (out / "train_compile.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--steps", type=int, default=100, help="steps of each timed run (eager, compiled)")
    ap.add_argument("--check-steps", type=int, default=10, help="steps of the determinism and resume runs (> 7)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup-intervals", type=int, default=2, help="logged steps counted as warm-up")
    ap.add_argument("--compile-threads", type=int, default=1,
                    help="inductor's parallel compile workers (TORCHINDUCTOR_COMPILE_THREADS); 1: one core in all")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), help="a subset of the cases (default: all)")
    ap.add_argument("--cache-dir", help="an inductor cache to compile into (default: an empty one per case, "
                    "so that warmup_s is a cold compile)")
    ap.add_argument("--dry-run", action="store_true", help="one toy case at toy size (for the tests)")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (under the temporary folder)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.check_steps <= KILL_AT:
        ap.error(f"--check-steps must exceed {KILL_AT} (the resume check kills its run at step {KILL_AT})")
    if args.steps <= args.warmup_intervals + 1:
        ap.error("--steps must exceed --warmup-intervals + 1")
    cases = TOY_CASES if args.dry_run else {k: CASES[k] for k in (args.cases or CASES)}
    if args.dry_run:
        args.batch = 16

    import torch

    from getlib.edm import SamplerConfig
    from getlib.pairs import PairSpec, generate_pairs

    command = "python benchmarks/train_compile.py" + "".join(f" {a}" for a in sys.argv[1:])
    load_before, t0 = os.getloadavg(), time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="train_compile-") as tmp:
        pairs = Path(tmp) / "pairs"
        n = 4 * args.batch   # 4 steps an epoch: the check runs cross epoch boundaries
        generate_pairs(lambda x, s, c: torch.tanh(x.float()), pairs, PairSpec(num_pairs=n, image_shape=(1, 8, 8), shard_size=n),
                       {"kind": "synthetic"}, SamplerConfig(num_steps=1))
        for name, (model, deq) in cases.items():
            t = time.perf_counter()
            rows.append(run_case(name, model, deq, args, pairs, Path(tmp) / name.replace("/", "_").replace(" ", "_")))
            print(json.dumps({**rows[-1], "case_wall_s": round(time.perf_counter() - t)}), flush=True)
    minutes = (time.perf_counter() - t0) / 60
    load_after = os.getloadavg()
    header = (f"{datetime.date.today()}, {cpu_name()}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
              f"1 thread, {args.compile_threads} compile worker(s), torch {torch.__version__}; "
              f"made by `{command}` in {minutes:.0f} min; load average {load_before[0]:.2f} before, "
              f"{load_after[0]:.2f} after")
    notes = [
        "`getlib.train.train` on synthetic 8x8x1 pairs (the default profile's settings: batch "
        f"{args.batch}, lr 2e-3 with 100 warm-up steps, EMA half-life 20k images), float32, one thread, every "
        "step logged; eager and `compile: true` each in a fresh process. s_per_step: the median step after the "
        f"first {args.warmup_intervals}; first_s: the first step (with the loader's start; compiled: the "
        "compilation); warmup_s: what the compiled run's warm-up steps took beyond the eager run's (cold: an empty "
        "inductor cache; cached: the kernels a first run left); break_even_steps: from this many steps on, the "
        f"compiled run has taken less time in all; net_s_profile: seconds saved over a {PROFILE_STEPS}-step run "
        "(the profile's max_steps; negative: lost). tokens: 8x8 / patch^2; train_gflops_per_image and "
        "attention_share_train (QK^T and AV over all FLOPs of a training step): `getlib.evaluate.attention_share`.",
        "",
        f"Checks: loss_within_tolerance: compiled against eager losses, at most {LOSS_TOLERANCE:g} relative over "
        f"the run and {FIRST_LOSS_TOLERANCE:g} at step 1; deterministic: two compiled {args.check_steps}-step runs "
        "in separate processes wrote the same bytes (student.pt, metrics.csv) and checkpoint tensors, and the "
        "same rows as the cold-compiled run's first ones; resume_exact: a compiled run killed at step "
        f"{KILL_AT} (after its step-{CHECK_CKPT_EVERY} checkpoint) and resumed equals the uninterrupted one. "
        "graphs: the graphs dynamo compiled (1: no graph break). Written by benchmarks/train_compile.py.",
    ]
    write_tables(rows, args.out, header, notes)
    failed = [r["case"] for r in rows if not (r["loss_within_tolerance"] and r["deterministic"] and r["resume_exact"])]
    print(f"wrote {args.out / 'train_compile.md'} ({minutes:.1f} min)" + (f"; checks FAILED: {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
