"""Does a code change leave what the code makes unchanged? Evidence for results/code_equivalence.json.

A run record (getlib.records) stands for its run only while the code that made it is the code
now, compared by fingerprint: any edit of the training, pair or scoring code (a refactor too) makes
every record stale, and a study that lives in committed records (the claims study: 38 runs, about
15 process-hours) would have to be trained again. This script checks an edit instead:

- pairs and training: a toy pair set, then one short run per distinct training recipe of a profile
  (its students grouped by every setting but lr, seed, max_steps), each made by the code at REV and
  by the working tree, in their own processes; every file DVC hashes must be byte-identical. Each run
  also stops half-way and resumes, so the resume path is compared too.
- scoring (with --rows-profile): the rows of a profile's evaluation records
  (results/<profile>/runs/*.json) made by REV's code against the working tree's, after `dvc repro` of
  that profile with the new code: equal but for clock-measured fields (`records.score_differences`).
  REV's rows are its committed ones, which only the machine that made them reproduces (CPU kernels
  round differently across CPUs); on another machine, reproduce the profile in a checkout of REV too
  and name it with --rows-before.

For each part that is identical it appends the pair of code identities it covers (REV's and the
working tree's: the training and pair fingerprints; with the rows, the scoring fingerprint and
file hashes) to results/code_equivalence.json, with the table as its evidence
(results/code_equivalence-<rev>.md), which `records.record_problems`
reads: a record made by REV's code then stands for the working tree's. When anything differs it
writes the table and no equivalence.

    python benchmarks/code_equivalence.py --before <rev> [--profile claims] [--rows-profile digits
                                          [--rows-before <a checkout of rev, reproduced here>]]
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from getlib.io import atomic_write, atomic_write_json, read_json  # noqa: E402
from getlib.machine import machine  # noqa: E402
from getlib.records import EQUIVALENCES, ROWS_CODE, score_differences  # noqa: E402


def machine_name() -> str:
    import torch
    return machine(torch.device("cpu"))   # (it names the CPU's model)


IGNORED = [line.strip() for line in (ROOT / ".dvcignore").read_text().splitlines()
           if line.strip() and not line.startswith("#")]
# Grouping a profile's students into recipes: these settings only pick a point of the same code path.
FREE = {"lr", "seed", "max_steps", "out", "pairs"}
SHORT = dict(max_steps=8, log_every=2, sample_every=4, snapshot_every=4, ckpt_every=4, num_samples=8,
             batch_size=16, warmup_steps=2, progress=False)

# Run in a child process whose getlib is `tree`'s: prints JSON.
CHILD = r"""
import json, sys
tree, task, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, tree)
import getlib
assert getlib.__file__.startswith(tree), getlib.__file__
if task == "identity":
    from getlib.io import file_sha256
    from getlib.provenance import PACKAGE, code_fingerprint
    print(json.dumps({"train_code": code_fingerprint("getlib.train"), "pairs_code": code_fingerprint("getlib.pairs"),
                      "evaluate_code": code_fingerprint("getlib.evaluate"),
                      "rows_code": {n: file_sha256(PACKAGE / n) for n in args["rows_code"]}}))
elif task == "pairs":
    import torch
    from getlib.data import digits
    from getlib.edm import SamplerConfig
    from getlib.pairs import PairSpec, generate_pairs
    x, _ = digits()
    teacher = lambda xt, s, c: (0.5 * x[:len(xt)] + 0.1 * xt.float()).to(xt.dtype)   # a toy denoiser
    generate_pairs(teacher, args["out"], PairSpec(num_pairs=128, image_shape=(1, 8, 8), shard_size=32, batch_size=32),
                   {"kind": "test"}, SamplerConfig(num_steps=2))
    print("{}")
else:
    import torch
    torch.set_num_threads(1)
    from getlib.train import TrainConfig, train
    settings = args["settings"]
    train(TrainConfig(**{**settings, "max_steps": settings["max_steps"] // 2}))   # half, then resumed
    train(TrainConfig(**settings))
    print("{}")
"""


def child(tree: Path, task: str, **args) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(tree), task, json.dumps(args)], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise RuntimeError(f"{task} under {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def hashed_files(folder: Path) -> dict[str, bytes]:
    """The files of `folder` DVC hashes (those .dvcignore does not list), as bytes; a training
    checkpoint as a digest of its contents (keys, types, tensor bytes): REV's code may pickle a resumed
    run's checkpoint to other bytes for the same values (fixed in `runs.load_checkpoint`)."""
    return {str(p.relative_to(folder)): checkpoint_contents(p) if p.parent.name == "checkpoints" else p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(fnmatch.fnmatch(p.name, pat) for pat in IGNORED)}


def checkpoint_contents(path: Path) -> bytes:
    import torch
    from train_compile import tensor_digest   # (benchmarks/: this script's folder is on sys.path)
    return tensor_digest(torch.load(path, map_location="cpu", weights_only=True)).encode()


def recipes(profile: str) -> dict[str, dict]:
    """One student per distinct recipe of the profile: {its name: its settings, shortened}."""
    from getlib.config import load_params
    p = load_params(ROOT / "profiles" / f"{profile}.yaml", root=ROOT)
    found = {}
    for key in p.students:
        cfg = {k: v for k, v in vars(p.train_config(key)).items()}
        group = json.dumps({k: v for k, v in cfg.items() if k not in FREE}, sort_keys=True, default=str)
        found.setdefault(group, (key, cfg))
    return {key: {**cfg, **SHORT, "num_pairs": cfg["num_pairs"] and 64} for key, cfg in found.values()}


def cached_outs(lock: Path) -> dict[str, dict[str, str]]:
    """{stage: {its work/ output: the hash DVC recorded}} of a dvc.lock."""
    import yaml
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {name: {o["path"]: o["md5"] for o in stage.get("outs", []) if o["path"].startswith("work/")}
            for name, stage in stages.items()}


def compare(a: dict, b: dict) -> str:
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return "identical" if not differ else "differ: " + ", ".join(differ)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the git revision of the earlier code")
    ap.add_argument("--profile", default="claims", help="whose students' recipes are trained")
    ap.add_argument("--rows-profile", help="whose evaluation records are compared (after its dvc repro)")
    ap.add_argument("--rows-before", type=Path, help="a checkout of --before where that profile was reproduced on "
                    "this machine (default: --before's committed records)")
    args = ap.parse_args()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.before], capture_output=True, text=True,
                         check=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = tmp / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), rev], check=True,
                       capture_output=True)
        try:
            trees = {"before": before, "after": ROOT}
            identity = {w: child(t, "identity", rows_code=list(ROWS_CODE)) for w, t in trees.items()}
            for w, t in trees.items():
                child(t, "pairs", out=str(tmp / w / "pairs"))
            rows.append(("pair set (128 pairs, 4 shards)", compare(*(hashed_files(tmp / w / "pairs") for w in trees))))
            for key, settings in recipes(args.profile).items():
                made = {}
                for w, t in trees.items():
                    out = tmp / w / "runs" / key
                    child(t, "train", settings={**settings, "pairs": str(tmp / "after" / "pairs"), "out": str(out)})
                    made[w] = hashed_files(out)
                recipe = {k: settings[k] for k in ("model", "deq", "num_pairs", "shuffle_targets") if settings[k]}
                rows.append((f"{key}: {json.dumps(recipe)}, 8 steps (4, then resumed)", compare(*made.values())))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=True)
    trained = all(verdict == "identical" for _, verdict in rows)
    for path in sorted((ROOT / "results" / args.rows_profile / "runs").glob("*.json")) if args.rows_profile else []:
        relative = path.relative_to(ROOT).as_posix()
        old = (read_json(args.rows_before / relative) if args.rows_before else
               json.loads(subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{relative}"], capture_output=True,
                                         text=True, check=True).stdout))
        problems = score_differences(old["rows"], read_json(path)["rows"])
        rows.append((f"evaluation rows of {relative}", "identical" if not problems else "differ: " + "; ".join(problems)))
    if args.rows_before:   # both pipelines' cached artifacts (work/), by the hashes DVC recorded
        for stage, outs in cached_outs(ROOT / "dvc.lock").items():
            if not outs:   # a stage whose outputs are all in results/ (compared as rows above)
                continue
            before = cached_outs(args.rows_before / "dvc.lock").get(stage, {})
            rows.append((f"`dvc repro` stage {stage}: {', '.join(sorted(outs))}",
                         compare(before, outs)))
    scored = bool(args.rows_profile) and all(verdict == "identical" for _, verdict in rows)
    covered = (["train_code", "pairs_code"] if trained else []) + (["evaluate_code", "rows_code"] if scored else [])
    table = "\n".join(f"| {what} | {verdict} |" for what, verdict in rows)
    text = (f"# Code equivalence: {rev[:12]} against the working tree\n\n"
            f"Written by `python benchmarks/code_equivalence.py --before {rev[:12]} --profile {args.profile} "
            + (f"--rows-profile {args.rows_profile}" if args.rows_profile else "")
            + (" --rows-before <checkout>" if args.rows_before else "")
            + f"` on {machine_name()}. Runs: every file DVC hashes, byte for byte (a checkpoint by its contents), one "
            f"thread per run. Rows: the "
            + ("evaluation records of both codes' `dvc repro` on this machine" if args.rows_before
               else "committed evaluation records against this machine's `dvc repro`")
            + ", clock-measured fields left out.\n\n"
            f"| what | before and after |\n|---|---|\n{table}\n\n"
            f"Recorded as equivalent in `results/code_equivalence.json`: {', '.join(covered) or 'nothing'}"
            + ("" if scored else "; the scoring code (evaluate_code, rows_code) was not shown equivalent, so records "
               "whose evaluation identity names the earlier scoring code stay stale") + ".\n")
    evidence = ROOT / "results" / f"code_equivalence-{rev[:12]}.md"
    atomic_write(evidence, lambda f: f.write(text.encode()))
    if covered:
        known = read_json(EQUIVALENCES) if EQUIVALENCES.is_file() else []
        step = {"before": rev, "evidence": evidence.relative_to(ROOT).as_posix()}
        for k in covered:
            step[k] = ({n: [identity["before"][k][n], identity["after"][k][n]] for n in ROWS_CODE} if k == "rows_code"
                       else [identity["before"][k], identity["after"][k]])
        atomic_write_json(EQUIVALENCES, [*known, step])
    print(text)


if __name__ == "__main__":
    main()
