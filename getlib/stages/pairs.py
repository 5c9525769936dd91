"""Stage pairs@condition: the teacher's (noise, image) pairs, work/<profile>/pairs/<condition>/."""
from __future__ import annotations

import sys
import time

from getlib.checkpoints import load_teacher_of
from getlib.config import Params, device_of
from getlib.io import atomic_copytree, atomic_write_json, remove_owned
from getlib.pairs import MANIFEST, VERIFIED, PairSpec, generate_pairs, pair_set_problems, read_manifest
from getlib.stages.launch import torchrun
from getlib.stages.data import load_data


def pair_spec(p: Params, condition: str) -> PairSpec:
    ds = load_data(p)
    return PairSpec(num_pairs=p.pairs.num_pairs, image_shape=ds.shape,
                    num_classes=ds.num_classes if condition == "cond" else None, seed_start=p.pairs.seed_start,
                    shard_size=p.pairs.shard_size, image_dtype=p.pairs.image_dtype, batch_size=p.pairs.batch_size)


def make_pairs(p: Params, condition: str, progress=None) -> dict:
    """Generate (or finish) the pair set of `condition`.

    DVC keeps this folder between runs (persist) so that an interrupted generation resumes. It is
    resumed, or a finished one reused, only when `pair_set_problems` finds nothing: same settings,
    teacher, sampler and code, every shard intact. Otherwise it is replaced, and the reason printed
    to stderr, as is all this stage finds in work/ (a log: the rendered notebook leaves it out; a
    finished set is also in DVC's cache). With `reuse`, that profile's set is copied in and kept
    when the same check finds nothing. With pairs.nproc > 1 it runs under torchrun. The summary's
    seconds and pairs/s are None when the set was already complete (nothing generated, nothing timed)."""
    root = p.work("pairs", condition)
    spec = pair_spec(p, condition)
    denoise, ident = load_teacher_of(p, condition)
    problems = pair_set_problems(root, spec, ident, p.sampler)
    if problems:
        print(f"{root}: generating anew: {'; '.join(problems)}", file=sys.stderr, flush=True)
        remove_owned(root, p.work("pairs"))
    source = p.reused("pairs", condition)
    if source is not None and source.exists() and not (root.exists() and any(root.iterdir())):
        why_not = pair_set_problems(source, spec, ident, p.sampler, verify=False) or (
            [] if (source / MANIFEST).is_file() else [f"{source} holds no pair set"])   # read-only
        if not why_not:   # copied without the checksum cache, then checked in the stage's own folder
            remove_owned(root, p.work("pairs"))
            atomic_copytree(source, root, skip=(VERIFIED,))
            why_not = pair_set_problems(root, spec, ident, p.sampler)
            if why_not:
                remove_owned(root, p.work("pairs"))
        print(f"{root}: " + (f"not reusing {source}: {'; '.join(why_not)}" if why_not
                             else f"copied the identical pair set {source}"), file=sys.stderr, flush=True)
    kept = (root / MANIFEST).is_file() and read_manifest(root, verify=False, complete=False)["complete"]
    start = time.perf_counter()
    if p.pairs.nproc > 1:
        args = ["--teacher", str(p.teacher_file(condition)), "--out", str(root), "--num-pairs", str(spec.num_pairs),
                "--seed-start", str(spec.seed_start), "--shard-size", str(spec.shard_size),
                "--batch-size", str(spec.batch_size), "--image-dtype", spec.image_dtype,
                "--image-shape", *map(str, spec.image_shape), "--steps", str(p.sampler.num_steps),
                "--solver", p.sampler.solver, "--device", str(device_of(p.pairs.device).type)]
        if spec.num_classes:
            args += ["--num-classes", str(spec.num_classes)]
        if p.teacher.edm_repo:
            args += ["--edm-repo", str(p.path(p.teacher.edm_repo))]
        if p.teacher.trust_pickle:
            args += ["--trust-pickle"]
        torchrun(p.pairs.nproc, "getlib.pairs", args)
        manifest = read_manifest(root)
    else:
        device = device_of(p.pairs.device)
        manifest = generate_pairs(denoise.to(device), root, spec, ident, p.sampler, device, progress=progress)
    seconds = None if kept else time.perf_counter() - start   # (a kept set's generation was not timed here)
    summary = {"condition": condition, "num_pairs": manifest["num_pairs"], "shards": len(manifest["shards"]),
               "bytes_per_pair": manifest["bytes_per_pair"],
               "bytes_per_pair_vs_released": manifest["bytes_per_pair_vs_released"],
               "teacher_nfe": p.sampler.nfe, "seconds": seconds, "pairs_per_s": seconds and spec.num_pairs / seconds}
    atomic_write_json(p.results(f"pairs-{condition}.json"), summary)
    return summary
