"""What DVC caches is a pure function of its inputs, settings and code: the same run in two folders
gives the same bytes (no timings, dates or absolute paths inside), so re-running a stage with an
output-neutral change leaves everything downstream of it up to date."""
import fnmatch
import json
import re
from pathlib import Path

import pytest
import torch

from getlib.data import digits
from getlib.edm import SamplerConfig
from getlib.features import train_feature_net
from getlib.pairs import PairSpec, generate_pairs
from getlib.teacher import TeacherConfig, train_teacher
from getlib.train import TrainConfig, train
from conftest import ROOT

IGNORED = [line.strip() for line in (ROOT / ".dvcignore").read_text().splitlines()
           if line.strip() and not line.startswith("#")]


def hashed_files(folder: Path) -> dict:
    """The files of `folder` that DVC hashes (those .dvcignore does not list), with their bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(fnmatch.fnmatch(p.name, pat) for pat in IGNORED)}


def test_a_training_run_is_the_same_bytes_wherever_it_runs(tmp_path):
    x, _ = digits()
    spec = PairSpec(num_pairs=64, image_shape=(1, 8, 8), shard_size=32, batch_size=32)
    folders = []
    for where in ("a", "b/deeper"):
        pairs = tmp_path / where / "pairs"
        generate_pairs(lambda xt, s, c: x[:len(xt)].to(xt.dtype), pairs, spec, {"kind": "test"},
                       SamplerConfig(num_steps=2))
        train(TrainConfig(pairs=str(pairs), out=str(tmp_path / where / "run"), model="GET-P/2", batch_size=16,
                          max_steps=4, log_every=1, ckpt_every=2, sample_every=2, snapshot_every=2, num_samples=4,
                          deq={"f_max_iter": 2, "grad_steps": 1}, progress=False))
        folders.append(tmp_path / where)
    a, b = (hashed_files(f / "run") for f in folders)
    assert {"student.pt", "run.json", "metrics.csv", "samples.csv", "checkpoints/latest.pt",
            "snapshots/step-0000002.pt"} <= set(a)
    assert a == b
    assert hashed_files(folders[0] / "pairs") == hashed_files(folders[1] / "pairs")
    for f in folders:   # the timings exist, beside the hashed files
        assert (f / "run" / "timing.csv").read_text().startswith("step,images_per_s,seconds")


def test_the_teacher_and_the_feature_network_are_the_same_bytes_twice(tmp_path):
    x, y = digits()
    cfg = TeacherConfig(channels=[8, 8, 8], emb_dim=16, batch_size=16, max_steps=3, warmup_steps=1)
    for name in ("one", "two"):
        assert train_teacher(x[:64], y[:64], cfg, tmp_path / name / "teacher.pt")["seconds"] > 0
        train_feature_net(x[:64], y[:64], torch.arange(48), torch.arange(48, 64), epochs=1, seed=0,
                          out_path=tmp_path / name / "feature_net.pt")
    assert hashed_files(tmp_path / "one") == hashed_files(tmp_path / "two")


def _stages() -> dict[str, dict]:
    import yaml
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: s.get("do") or s for name, s in stages.items()}


def _stage_deps() -> dict[str, list[str]]:
    return {name: s["deps"] for name, s in _stages().items()}


def _stage_closure(notebook: Path, cmd: str) -> set[str]:
    """The getlib source files that a stage can execute: the import closure of the modules its
    command runs (`python -m getlib.notebook`) and of every getlib import in its notebook's code
    cells (at any depth, function-level imports included)."""
    import ast

    from getlib.provenance import import_closure, imported_modules, module_file
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"] if notebook else []
    modules = set().union(*(imported_modules(ast.parse("".join(c["source"]))) for c in cells))
    modules |= set(re.findall(r"python -m (getlib[\w.]*)", cmd))
    return {module_file(m).relative_to(ROOT).as_posix() for m in import_closure(*modules)}


@pytest.mark.parametrize("stage", sorted(_stage_deps()))
def test_each_stage_lists_exactly_the_modules_it_can_run(stage):
    """An edit of a module re-runs exactly the stages that can execute it (their command or their
    notebook): a missing module would leave results stale, an extra one would re-run a stage for nothing."""
    deps = _stage_deps()[stage]
    notebook = next((ROOT / d for d in deps if d.endswith(".ipynb")), None)   # (none: the check stage)
    listed = {d for d in deps if d.startswith("getlib/")}
    needed = _stage_closure(notebook, _stages()[stage]["cmd"])
    assert {"getlib/config.py", "getlib/notebook.py" if notebook else "getlib/stages/check.py"} <= needed
    assert not needed - listed, f"dvc.yaml stage {stage} lacks {sorted(needed - listed)}"
    assert not listed - needed, f"dvc.yaml stage {stage} lists {sorted(listed - needed)}, which its notebook never runs"


def test_a_pair_set_and_a_run_fingerprint_only_code_their_stage_lists():
    """A pair set and a run record the fingerprint of getlib.pairs / getlib.train and what they import:
    every module of it is a dep of the stage (else DVC would not re-run what the resume check refuses)."""
    from getlib.provenance import import_closure, module_file
    for stage, module in (("pairs", "getlib.pairs"), ("distill", "getlib.train")):
        modules = {module_file(m).relative_to(ROOT).as_posix() for m in import_closure(module)}
        assert modules <= set(_stage_deps()[stage])


@pytest.mark.parametrize("module, code", [
    ("getlib.pairs", {"checkpoints", "cli", "devices", "edm", "images", "io", "pairs", "provenance", "unet"}),
    ("getlib.train", {"batches", "checkpoints", "cli", "deq", "devices", "edm", "ema", "images", "io", "models", "pairs",
                      "provenance", "runs", "train", "unet"}),
])
def test_a_fingerprint_covers_the_code_that_makes_the_artifact_and_no_more(module, code):
    """A pair set or a run is refused (made again: hours on CIFAR-10) when a module of its fingerprint
    changes, so glue (tables, plots, data-set files, stage code) must stay out of these closures.
    Pinned: a new import here has to be a deliberate choice."""
    from getlib.provenance import NOT_CODE, import_closure
    assert {m.removeprefix("getlib.") for m in import_closure(module) if m not in NOT_CODE} == code


def test_the_teachers_training_code_reaches_no_other_stage():
    """Editing how the embedded teacher trains re-runs the teacher stage and nothing else (its output
    is content-stable, so an output-neutral edit leaves pairs and everything after up to date)."""
    users = {stage for stage, deps in _stage_deps().items() if "getlib/teacher.py" in deps}
    assert users == {"teacher"}
