"""Stage functions called directly (the pipeline test runs them through DVC and papermill)."""
from pathlib import Path

import pytest
import yaml

from getlib.stages.data import prepare_data
from getlib.stages.pairs import make_pairs
from getlib.stages.teacher import make_teacher
from getlib.config import load_params
from getlib.pairs import PairDataset, read_manifest
from conftest import ROOT



def smoke_params(folder: Path, top: dict | None = None, **pairs):
    raw = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    raw["pairs"].update(pairs)
    raw.update(top or {})
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    return load_params(folder / "params.yaml")


def test_a_pair_set_left_by_other_settings_is_replaced_and_a_finished_one_kept(tmp_path):
    p = smoke_params(tmp_path, num_pairs=120, shard_size=50)
    prepare_data(p)
    make_teacher(p, "uncond")
    assert make_pairs(p, "uncond")["seconds"] > 0
    root = p.work("pairs", "uncond")
    first = read_manifest(root)
    assert first["num_pairs"] == 120 and len(first["shards"]) == 3
    inode = (root / first["shards"][0]["file"]).stat().st_ino   # written atomically: a rewrite is a new file

    kept = make_pairs(p, "uncond")   # same settings: the finished set is kept as it is (and not timed)
    assert (root / first["shards"][0]["file"]).stat().st_ino == inode
    assert kept["seconds"] is None and kept["pairs_per_s"] is None

    p = smoke_params(tmp_path, num_pairs=80, shard_size=50)   # another count: rebuilt from scratch
    make_pairs(p, "uncond")
    second = read_manifest(root)
    assert second["num_pairs"] == 80 and [s["count"] for s in second["shards"]] == [50, 30]
    assert sorted(f.name for f in (root / "shards").iterdir()) == sorted(Path(s["file"]).name for s in second["shards"])
    assert len(PairDataset(root, verify="sha256")) == 80


def test_a_profile_reuses_another_profiles_identical_pair_set(tmp_path, capsys):
    a = smoke_params(tmp_path, num_pairs=40, shard_size=20)
    prepare_data(a)
    make_teacher(a, "uncond")
    make_pairs(a, "uncond")
    source = a.work("pairs", "uncond")
    tree = lambda: {str(f.relative_to(source)): (f.read_bytes(), f.stat().st_mtime_ns)   # noqa: E731
                    for f in sorted(source.rglob("*")) if f.is_file()}
    made = tree()
    for profile, num_pairs, reused in (("same", 40, True), ("more", 60, False)):
        b = smoke_params(tmp_path, {"profile": profile, "reuse": "smoke"}, num_pairs=num_pairs, shard_size=20)
        prepare_data(b)
        make_teacher(b, "uncond")   # trained again: the same bytes, so the same teacher sha256
        capsys.readouterr()
        make_pairs(b, "uncond")
        out = capsys.readouterr().err
        assert ("copied the identical pair set" in out) == reused and ("not reusing" in out) != reused, out
        assert read_manifest(b.work("pairs", "uncond"))["num_pairs"] == num_pairs
    assert tree() == made   # the source is untouched: every file, hidden ones too, and their times


@pytest.mark.slow
def test_a_non_default_sampler_reaches_every_torchrun_worker(tmp_path):
    """With pairs.nproc: 2 (gloo on the CPU) the stage launches `getlib.pairs` under torchrun with a
    command line generated from PairSpec and SamplerConfig: every setting reaches the workers, so
    the manifest (and every shard's sha256) is the one a single process makes."""
    sampler = {"num_steps": 3, "sigma_min": 0.01, "sigma_max": 40.0, "rho": 5.0, "solver": "euler"}
    manifests = {}
    for nproc in (1, 2):
        folder = tmp_path / f"nproc{nproc}"
        folder.mkdir()
        p = smoke_params(folder, {"sampler": sampler}, num_pairs=40, shard_size=10, nproc=nproc)
        prepare_data(p)
        make_teacher(p, "uncond")
        make_pairs(p, "uncond")
        manifests[nproc] = read_manifest(p.work("pairs", "uncond"), verify="sha256")
    assert manifests[2]["sampler"] == {**sampler, "nfe": 3}
    assert manifests[2] == manifests[1]


# ------------------------------------------------------------------------------------------------
# The tables and the grid seeds
# ------------------------------------------------------------------------------------------------

def _row(source, kind, params, fid, condition="uncond", **extra):
    return {"source": source, "kind": kind, "condition": condition, "nfe": 1, "fid": fid, "fid_std": 0.5, "kid": 0.01,
            "params": params, "gflops_per_sample": params / 1e6, "images_per_s": 1e6 / params,
            "train_pflops": params / 1e5, "model": source.upper(), "activations_kib_per_image": params / 1e3,
            **extra}


COMPARISON = [
    {"source": "real (held-out)", "kind": "real", "condition": "-", "nfe": 0, "fid": 1.0, "fid_std": 0.0, "kid": 0.0},
    _row("teacher (uncond)", "teacher", 2e6, 2.0),
    _row("get", "GET", 1e6, 10.0, activations_kib_per_image_memory_efficient=100.0),
    _row("vit-same", "ViT", 1.1e6, 20.0), _row("vit-4x", "ViT", 4.2e6, 8.0), _row("vit-20x", "ViT", 2e7, 5.0),
    _row("vit-cond", "ViT", 5e6, 1.0, condition="cond"),
]


def test_get_vs_vit_pairs_each_get_with_the_closest_vits_of_its_condition():
    from getlib.figures import get_vs_vit_rows
    rows = get_vs_vit_rows(COMPARISON)
    assert [(r["relation"], r["vit"]) for r in rows] == [("matched size", "vit-same"), ("~5x size", "vit-4x")]
    assert rows[1]["fid_ratio"] == 10.0 / 8.0 and rows[1]["params_ratio"] == 4.2
    without_5x = [r for r in COMPARISON if r["source"] != "vit-4x"]   # 20x is not "~5x" (outside 2.5x..10x)
    assert [r["relation"] for r in get_vs_vit_rows(without_5x)] == ["matched size"]
    assert get_vs_vit_rows([r for r in COMPARISON if r["kind"] != "ViT"]) == []
    steps = lambda rows, n: [{**r, "train_steps": n} for r in rows]   # noqa: E731
    longer = steps(COMPARISON, 800) + steps([_row("get-long", "GET", 1e6, 9.0), _row("vit-same-long", "ViT", 1.1e6, 19.0)],
                                            1200)
    assert [(r["get"], r["vit"]) for r in get_vs_vit_rows(longer) if r["relation"] == "matched size"] == \
        [("get", "vit-same"), ("get-long", "vit-same-long")]   # a ViT trained as long, when there is one


def test_one_step_rows_keep_is_only_when_some_row_has_it():
    from getlib.figures import one_step_rows
    rows = one_step_rows(COMPARISON)
    assert len(rows) == len(COMPARISON) and "is" not in rows[0] and {r["result"] for r in rows} == {"measured"}
    reported = [{**rows[0], "source": "GET-T/2 (paper)", "is": 9.4, "result": "reported"}]
    rows = one_step_rows(COMPARISON, reported)
    assert rows[-1]["is"] == 9.4 and rows[0]["is"] is None


def test_benchmark_rows_compare_with_the_teacher_of_the_same_condition():
    from getlib.figures import benchmark_rows
    manifest = {"bytes_per_pair": 100, "bytes_per_pair_vs_released": 0.25}
    comparison = COMPARISON[:-1] + [_row("teacher (cond)", "teacher", 2e6, 2.0, condition="cond"), COMPARISON[-1]]
    rows = {r["student"]: r for r in benchmark_rows(comparison, {"uncond": manifest, "cond": manifest})}
    assert rows["get"]["speedup_vs_teacher"] == 2.0 and rows["get"]["memory_efficient_kib_per_image"] == 100.0
    assert rows["vit-same"]["memory_efficient_kib_per_image"] is None
    assert rows["vit-cond"]["teacher_images_per_s"] == 0.5 and rows["get"]["bytes_per_pair_released_format"] == 400


def test_grid_seeds_are_evaluation_seeds_in_class_order():
    from getlib.edm import latents_for_seeds, seeds_by_class
    assert seeds_by_class(1000, 5, (1, 8, 8), None) == ([1000, 1001, 1002, 1003, 1004], None)
    seeds, per = seeds_by_class(1000, 20, (1, 8, 8), 10)
    assert per == 2 and len(seeds) == 20 and min(seeds) >= 1000 and len(set(seeds)) == 20
    _, labels = latents_for_seeds(seeds, (1, 8, 8), 10)
    assert labels.tolist() == [c for c in range(10) for _ in range(2)]


def test_one_trainer_per_run_folder(tmp_path):
    """DVC and a second worker may reach the same student: a live trainer's lock is refused by name,
    a dead one's is taken over, and the lock goes when training ends (or fails)."""
    import os
    import subprocess

    import pytest

    from getlib.stages.distill import training_lock
    lock = tmp_path / "students" / ".get-p.lock"
    with training_lock(lock):
        assert lock.read_text() == str(os.getpid())
        with pytest.raises(RuntimeError, match=f"process {os.getpid()} is training this run"):
            with training_lock(lock):
                pass
    assert not lock.exists()
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock.write_text(str(gone.pid))   # a trainer that died without removing its lock
    with pytest.raises(ValueError):
        with training_lock(lock):
            raise ValueError("training failed")
    assert not lock.exists()


def test_a_study_counts_a_continued_run_once_in_its_compute(tmp_path):
    """A student that continues a shorter one costs the study only its extra steps: a chain of such
    students counts as its longest run, whose record carries the seconds of the run it continued."""
    import json

    from getlib.stages.interim import study_compute
    p = smoke_params(tmp_path, {"conditions": ["uncond"], "students": {
        "vit-p": {"model": "ViT-P/2", "condition": "uncond", "train": {"max_steps": 4}},
        "vit-p-long": {"model": "ViT-P/2", "condition": "uncond", "train": {"max_steps": 8}},
        "vit-p-lr": {"model": "ViT-P/2", "condition": "uncond", "train": {"max_steps": 4, "lr": 1e-4}}}})
    rows = [{"source": "vit-p", "train_pflops": 1.0}, {"source": "vit-p-long", "train_pflops": 2.0},
            {"source": "vit-p-lr", "train_pflops": 1.5}, {"source": "real (held-out)", "train_pflops": None}]
    p.results("evaluation").mkdir(parents=True)
    p.results("evaluation", "comparison.json").write_text(json.dumps(rows))
    p.results("timing").mkdir(parents=True)
    p.results("train").mkdir(parents=True)
    for key, seconds in (("vit-p", 1800), ("vit-p-long", 3600)):   # the distill stage's timing files
        p.results("timing", f"{key}.json").write_text(json.dumps({"student": key, "seconds": seconds}))
        p.results("train", f"{key}.json").write_text(json.dumps({"steps": 4}))
    p.results("train", "vit-p-lr.json").write_text(json.dumps({"seconds": 5400}))   # written before timing/ was
    assert study_compute(p) == {"scored_students": 3, "trained_runs": 2, "training_pflops": 3.5, "process_hours": 2.5,
                                "untimed": []}
    p.results("train", "vit-p-lr.json").unlink()   # a record copied without its timing
    assert study_compute(p)["process_hours"] == 1.0 and study_compute(p)["untimed"] == ["vit-p-lr"]
    rows.pop(2)                                    # vit-p-lr not scored yet (pending)
    p.results("evaluation", "comparison.json").write_text(json.dumps(rows))
    assert study_compute(p)["training_pflops"] == 2.0 and study_compute(p)["scored_students"] == 2
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())   # under a cosine schedule (tied to its
    raw["distill"]["lr_schedule"] = "cosine"                        # max_steps) no run continues another
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    p = load_params(tmp_path / "params.yaml")
    assert study_compute(p)["trained_runs"] == 2 and study_compute(p)["training_pflops"] == 3.0
