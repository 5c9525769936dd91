"""Stage pairs@condition: the teacher's (noise, image) pairs, work/<profile>/pairs/<condition>/."""
from __future__ import annotations

import time

from getlib import progress
from getlib.checkpoints import load_teacher_of
from getlib.config import Params, device_of
from getlib.io import atomic_write_json
from getlib.notebook import publishing
from getlib.pairs import MANIFEST, VERIFIED, PairSpec, cli_args, generate_pairs, pair_set_problems, read_manifest
from getlib.stages.folders import adopt_reused, clear_unless_resumable
from getlib.stages.launch import torchrun
from getlib.stages.data import load_data


def pair_spec(p: Params, condition: str) -> PairSpec:
    ds = load_data(p)
    return PairSpec(num_pairs=p.pairs.num_pairs, image_shape=ds.shape,
                    num_classes=ds.num_classes if condition == "cond" else None, seed_start=p.pairs.seed_start,
                    shard_size=p.pairs.shard_size, image_dtype=p.pairs.image_dtype, batch_size=p.pairs.batch_size)


def make_pairs(p: Params, condition: str) -> dict:
    """Generate (or finish) the pair set of `condition`.

    DVC keeps this folder between runs (persist) so that an interrupted generation resumes. It is
    resumed, or a finished one kept, only when `pair_set_problems` finds nothing: same settings,
    teacher, sampler and code, every shard intact; otherwise it is replaced (`stages.folders`, which
    also says so on stderr; a finished set is also in DVC's cache). With `reuse`, that profile's set
    is copied in and kept when the same check finds nothing, first on the source (read only, without
    reading its shards), then on the copy. With pairs.nproc > 1 it runs under torchrun. The summary's
    seconds and pairs/s are None when the set was already complete (nothing generated, nothing timed).
    Progress, shard by shard, goes to the stage command's terminal (getlib.progress)."""
    root = p.work("pairs", condition)
    spec = pair_spec(p, condition)
    denoise, ident = load_teacher_of(p, condition)
    clear_unless_resumable(root, p.work("pairs"), pair_set_problems(root, spec, ident, p.sampler), "generating anew")
    adopt_reused(root, p.work("pairs"), p.reused("pairs", condition), "pair set",
                 lambda source: pair_set_problems(source, spec, ident, p.sampler, verify=False) or (
                     [] if (source / MANIFEST).is_file() else [f"{source} holds no pair set"]),
                 lambda copy: pair_set_problems(copy, spec, ident, p.sampler),
                 skip=(VERIFIED,))   # (copied without the checksum cache, which is then rebuilt in the copy)
    kept = (root / MANIFEST).is_file() and read_manifest(root, verify=False, complete=False)["complete"]
    start = time.perf_counter()
    if p.pairs.nproc > 1:
        args = ["--teacher", str(p.teacher_file(condition)), "--out", str(root), "--device", p.pairs.device,
                *cli_args(spec, p.sampler)]
        if p.teacher.edm_repo:
            args += ["--edm-repo", str(p.path(p.teacher.edm_repo))]
        if p.teacher.trust_pickle:
            args += ["--trust-pickle"]
        torchrun(p.pairs.nproc, "getlib.pairs", args)
        manifest = read_manifest(root)
    else:
        device = device_of(p.pairs.device)
        bar = progress.bar(spec.num_pairs, f"pairs@{condition}", "pair")
        manifest = generate_pairs(denoise.to(device), root, spec, ident, p.sampler, device,
                                  progress=lambda done, _: bar.update(min(done * spec.shard_size, spec.num_pairs) - bar.n))
        bar.close()
    seconds = None if kept else time.perf_counter() - start   # (a kept set's generation was not timed here)
    summary = {"condition": condition, "num_pairs": manifest["num_pairs"], "shards": len(manifest["shards"]),
               "bytes_per_pair": manifest["bytes_per_pair"],
               "bytes_per_pair_vs_released": manifest["bytes_per_pair_vs_released"],
               "teacher_nfe": p.sampler.nfe, "seconds": seconds, "pairs_per_s": seconds and spec.num_pairs / seconds}
    if publishing():
        atomic_write_json(p.results(f"pairs-{condition}.json"), summary)
    return summary
