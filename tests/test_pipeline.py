"""The pipeline end to end: the smoke profile through `dvc repro` (every notebook under papermill)
in a temporary copy of the project, then what caching promises; and the CIFAR-10 profiles' stages at
toy scale with stand-ins for what cannot be downloaded here."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from standins import make_cifar10, make_edm_checkpoint, make_edm_repo, stand_in_inception
from conftest import ROOT

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


FIGURES = ["samples-uncond.png", "samples-cond.png", "interpolation-uncond.png", "interpolation-cond.png",
           "training_loss.png", "fid_vs_steps.png", "fid_vs_training_flops.png", "fid_vs_params.png",
           "fid_vs_iterations.png", "fixed_point.png", "speed_and_memory.png"]
TABLES = {
    "one_step": ["source", "nfe", "fid", "fid_std", "kid", "params", "gflops_per_sample", "images_per_s"],
    "get_vs_vit": ["get", "vit", "relation", "get_params", "vit_params", "get_fid", "vit_fid", "get_train_pflops",
                   "vit_train_pflops", "params_ratio"],
    "benchmarks": ["student", "images_per_s", "teacher_images_per_s", "speedup_vs_teacher",
                   "train_activations_kib_per_image", "memory_efficient_kib_per_image", "bytes_per_pair",
                   "bytes_per_pair_released_format"],
    "claims": ["claim", "paper", "compared", "ours", "difference", "verdict", "basis"],
}


def run(cmd, cwd, check=True):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=True)
    if check and out.returncode:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def ran(out) -> set[str]:
    return {line.split("'")[1] for line in (out.stdout + out.stderr).splitlines() if line.startswith("Running stage")}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A copy of the project (what git would hold) on the smoke profile, after `dvc repro`."""
    repo = tmp_path_factory.mktemp("project")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file() and not name.startswith(("results/", "store/")):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    shutil.copy(repo / "profiles" / "smoke.yaml", repo / "params.yaml")
    run("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm copy", repo)
    out = run("dvc repro", repo)
    run("git add -A && git -c user.name=t -c user.email=t@t commit -qm repro", repo)
    return repo, out


def test_smoke_repro_runs_every_stage_and_writes_every_result(smoke):
    repo, out = smoke
    assert ran(out) == {"check", "data", "features", "teacher@uncond", "teacher@cond", "pairs@uncond", "pairs@cond",
                        "distill@get-p", "distill@vit-p", "distill@get-p-cond", "evaluate", "figures"}
    rendered = sorted((repo / "results/smoke/notebooks").glob("*.md"))
    for nb in (repo / "notebooks").glob("*.ipynb"):   # every notebook ran under papermill and was rendered
        assert any(r.stem.startswith(nb.stem) for r in rendered), nb.name
        assert any(e.stem.startswith(nb.stem) for e in (repo / "work/smoke/notebooks").glob("*.ipynb")), nb.name
    for md in rendered:   # ... showing at least one picture of its stage's objects, and nothing of this machine
        text = md.read_text()
        pictures = re.findall(r"!\[png\]\(([^)]+)\)", text)
        assert pictures and all((md.parent / name).stat().st_size > 100 for name in pictures), md.name
        assert str(repo) not in text and "'seconds':" not in text, md.name   # no local paths, no timings
        assert "100%|" not in text, md.name   # no progress bars
    for bar in ("teacher", "pairs@uncond", "GET-P/2", "ViT-P/2", "evaluate"):   # progress, in the terminal
        assert re.search(rf"^{re.escape(bar)}: 100%\|.*\| (\d+)/\1 \[", out.stdout + out.stderr, re.M), bar
    results = repo / "results" / "smoke"
    rows = json.loads((results / "evaluation" / "comparison.json").read_text())
    assert [r["source"] for r in rows] == ["real (held-out)", "teacher (uncond)", "get-p", "vit-p",
                                           "teacher (cond)", "get-p-cond"]
    assert all(math.isfinite(r["fid"]) and r["n"] == 100 for r in rows)
    for name in FIGURES:
        assert (results / "figures" / name).stat().st_size > 1000, name
    for name, columns in TABLES.items():
        rows = json.loads((results / "tables" / f"{name}.json").read_text())
        assert rows and (results / "tables" / f"{name}.md").exists() and (results / "tables" / f"{name}.csv").exists()
        for r in rows:
            assert set(columns) <= set(r), (name, set(columns) - set(r))
            assert all(math.isfinite(r[c]) for c in columns if isinstance(r[c], float)), (name, r)
            optional = {"memory_efficient_kib_per_image"} | ({"params", "gflops_per_sample", "images_per_s"}
                                                             if r.get("kind") == "real" else set())
            assert all(r[c] is not None for c in set(columns) - optional), (name, r)
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["features"] == "digits-cnn" and {"real_held-out", "teacher_uncond", "get-p"} <= set(metrics)


def test_a_second_repro_runs_nothing(smoke):
    repo, _ = smoke
    out = run("dvc repro", repo)
    assert ran(out) == set()
    assert "up to date" in run("dvc status", repo).stdout


def test_notebooks_run_by_hand_leave_git_status_clean_and_the_pipeline_up_to_date(smoke, tmp_path):
    """Every notebook executed as in JupyterLab (publish = False, its default) on the finished run:
    the stage's work is done again (the same bytes under work/: DVC finds every stage up to date)
    but nothing under results/ is written, so `git status` stays clean; the figures notebook shows
    what it wrote under work/<profile>/unpublished/."""
    repo, _ = smoke
    before = run("git status --porcelain", repo).stdout
    for nb in sorted((repo / "notebooks").glob("*.ipynb")):
        run(f"{BIN / 'python'} -m papermill {nb} {tmp_path / nb.name} --cwd {repo / 'notebooks'} --no-progress-bar",
            repo)
    assert run("git status --porcelain", repo).stdout == before == ""
    assert ran(run("dvc repro", repo)) == set()
    assert (repo / "work/smoke/unpublished/tables/claims.md").is_file()
    executed = json.loads((tmp_path / "07_figures.ipynb").read_text())
    assert "work/smoke/unpublished/figures/samples-uncond.png" in json.dumps(executed)
    for nb in tmp_path.glob("*.ipynb"):   # no warning that names this machine's files (e.g. scipy's LinAlgWarning)
        for cell in json.loads(nb.read_text())["cells"]:
            for out in cell.get("outputs", []):
                for line in "".join(out.get("text", "")).splitlines() if out.get("output_type") == "stream" else []:
                    assert "Warning" not in line or (sys.prefix not in line and str(repo) not in line), (nb.name, line)


def test_tables_show_a_dash_where_nothing_applies_never_nan(smoke):
    """The committed Markdown tables and the rendered notebooks' tables: '-' for what does not apply."""
    repo, _ = smoke
    results = repo / "results/smoke"
    for md in [*results.glob("evaluation/*.md"), *results.glob("tables/*.md"), *results.glob("notebooks/*.md")]:
        assert not re.search(r"\bnan\b", md.read_text(), flags=re.I), md.name
    evaluate = (results / "notebooks/06_evaluate.md").read_text()
    assert "<td>-</td>" in evaluate and "<th>images/s</th>" in evaluate


def test_the_figures_stage_reads_no_wall_clock_field_it_does_not_show(smoke):
    """Its results/ deps (evaluation/, train/) hold no seconds: the training's timings are in
    timing/, which no stage reads. The evaluation's images/s are the one clock-measured input, shown
    by the figures stage's tables (benchmarks, one_step) and its speed figure."""
    repo, _ = smoke
    results = repo / "results/smoke"
    for path in [*results.glob("evaluation/*"), *results.glob("train/*")]:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            fields = {k for r in (data if isinstance(data, list) else [data]) for k in r}
        else:
            fields = set(path.read_text().splitlines()[0].split(",")) if path.suffix == ".csv" else set()
        assert not fields & {"seconds", "pairs_per_s"}, path
        assert "images_per_s" not in fields or path.stem == "comparison", path
    shown = json.loads((results / "tables/benchmarks.json").read_text())
    assert shown and all(r["images_per_s"] for r in shown)
    for key in ("get-p", "vit-p", "get-p-cond"):
        assert json.loads((results / "timing" / f"{key}.json").read_text())["seconds"] > 0
        assert (results / "timing" / f"{key}.csv").read_text().startswith("step,images_per_s,seconds")


def test_a_stage_that_keeps_its_artifacts_renders_the_notebook_a_fresh_run_renders(smoke):
    """The rendered notebooks are a function of the stage's inputs, not of what work/ held: re-run,
    the pairs and distill stages keep their finished pair set and run and log that to stderr, which
    the rendered copy leaves out (a fresh pair set prints its shards' progress there too)."""
    repo, _ = smoke
    notebooks = repo / "results/smoke/notebooks"
    fresh = {md.name: md.read_text() for md in notebooks.glob("*.md")}
    kept = [repo / "work/smoke/pairs/uncond", repo / "work/smoke/students/get-p"]
    files = lambda: {f: f.stat().st_mtime_ns for d in kept for f in d.rglob("*") if f.is_file()}  # noqa: E731
    before = files()
    out = run("dvc repro -f -s pairs@uncond distill@get-p", repo)
    assert ran(out) == {"pairs@uncond", "distill@get-p"}
    assert files() == before and "anew" not in out.stdout + out.stderr   # kept, not made again
    assert {md.name: md.read_text() for md in notebooks.glob("*.md")} == fresh
    assert json.loads((repo / "results/smoke/pairs-uncond.json").read_text())["seconds"] is None   # not timed
    assert ran(run("dvc repro", repo)) == set()   # nothing downstream changed


@pytest.mark.parametrize("edit, message", [
    (lambda raw: raw["students"]["get-p"].__setitem__("model", "GET-Z/2"), "students.get-p.model: unknown model 'GET-Z/2'"),
    (lambda raw: raw["distill"].__setitem__("lrr", 1), "distill: unknown training setting(s) ['lrr']"),
])
def test_a_bad_param_is_refused_in_one_line_before_any_stage_runs(smoke, edit, message):
    """The check stage runs first: a bad key or value stops `dvc repro` there, with one line naming
    it; no stage ran, so no output was removed (`git status` shows only the edit) and the cache is
    whole. Put right, no stage after the check runs (its token is the same bytes)."""
    repo, _ = smoke
    status = lambda: set(run("git status --porcelain", repo).stdout.splitlines())  # noqa: E731
    before, params = status(), (repo / "params.yaml").read_text()
    raw = yaml.safe_load(params)
    edit(raw)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    try:
        out = run("dvc repro", repo, check=False)
        assert out.returncode != 0 and ran(out) == {"check"}
        refusal = [line for line in out.stderr.splitlines() if line.startswith("params.yaml: ")]
        assert len(refusal) == 1 and message in refusal[0]
        assert status() == before | {" M params.yaml"}
        for kept in ["pairs/uncond/manifest.json", "teacher/uncond/teacher.pt", "students/get-p/student.pt"]:
            assert (repo / "work/smoke" / kept).is_file(), kept
    finally:
        (repo / "params.yaml").write_text(params)
    assert ran(run("dvc repro", repo)) <= {"check"}   # put right: at most the check again, no other stage


def test_an_output_neutral_edit_of_the_teachers_code_reruns_the_teacher_alone(smoke):
    """An edit of getlib/teacher.py re-runs the teacher stages (their deps list it) and nothing else:
    no other stage's notebook can run that module, and the teacher file is a pure function of its
    inputs and code, so re-running gives the same bytes and pairs, students and results stay up to date."""
    repo, _ = smoke
    run("dvc repro", repo)   # settle what earlier tests left (a failed stage removes its non-persistent outputs)
    before = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    module = repo / "getlib" / "teacher.py"
    code = module.read_text()
    try:
        module.write_text(code + "\n# an edit that changes no number\n")
        assert ran(run("dvc repro", repo)) == {"teacher@uncond", "teacher@cond"}
        after = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
        cached = lambda outs: [o for o in outs if o["path"].startswith("work/") and "notebooks" not in o["path"]]
        for stage in ("teacher@uncond", "teacher@cond"):
            assert cached(after[stage]["outs"]) == cached(before[stage]["outs"])   # byte for byte
        assert ran(run("dvc repro", repo)) == set()
    finally:
        module.write_text(code)
    assert ran(run("dvc repro", repo)) == {"teacher@uncond", "teacher@cond"}
    stage = repo / "getlib" / "stages" / "figures.py"
    stage.write_text(stage.read_text() + "\n")
    assert ran(run("dvc repro", repo)) == {"figures"}


def test_an_ablation_reruns_only_the_stages_downstream_of_it(smoke):
    repo, _ = smoke
    out = run("dvc exp run -S '+students.get-p.train.lr=0.001'", repo)
    assert ran(out) == {"check", "distill@get-p", "evaluate", "figures"}
    assert json.loads((repo / "results/smoke/train/get-p.json").read_text())["recipe"]["kind"] == "DEQ"
    assert yaml.safe_load((repo / "params.yaml").read_text())["students"]["get-p"]["train"]["lr"] == 0.001


def test_interim_results_take_runs_that_are_not_here_from_their_current_records(smoke, tmp_path):
    repo = tmp_path / "project"
    shutil.copytree(smoke[0], repo, symlinks=True)   # a copy: the other tests' project stays whole
    results = repo / "results/smoke"
    full = {r["source"]: r for r in json.loads((results / "evaluation/comparison.json").read_text())}
    shutil.rmtree(repo / "work/smoke/students/vit-p")   # as if vit-p had been trained in an earlier session
    # the active params.yaml: the ablation test may have changed get-p's settings (and retrained it);
    # with --recheck, get-p and get-p-cond are evaluated again and must reproduce their records
    out = run(f"{BIN / 'python'} -m getlib.stages.interim params.yaml --recheck", repo)
    summary = json.loads((results / "interim.json").read_text())
    assert {k: v for k, v in summary.items() if k != "compute"} == {
        "evaluated": ["get-p", "get-p-cond"], "recorded": ["vit-p"], "stale": {}, "not_rechecked": [],
        "pending": []}, out.stdout
    assert summary["compute"]["trained_runs"] == 3 and summary["compute"]["training_pflops"] == sum(
        full[k]["train_pflops"] for k in ("get-p", "vit-p", "get-p-cond"))
    rows = json.loads((results / "evaluation/comparison.json").read_text())
    assert [r["source"] for r in rows] == ["real (held-out)", "teacher (uncond)", "get-p", "vit-p", "teacher (cond)",
                                           "get-p-cond"]
    assert {k: v for k, v in rows[3].items() if k != "images_per_s"} == {
        k: v for k, v in full["vit-p"].items() if k != "images_per_s"}
    assert (results / "tables/claims.md").exists()

    # a setting changed since: vit-p's record is stale, and says why
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["students"]["vit-p"].setdefault("train", {})["lr"] = 0.0123
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    run(f"{BIN / 'python'} -m getlib.stages.interim params.yaml", repo)
    summary = json.loads((results / "interim.json").read_text())
    assert summary["pending"] == ["vit-p"] and summary["recorded"] == ["get-p", "get-p-cond"]   # not evaluated again
    assert summary["evaluated"] == []
    assert any("settings.lr: recorded" in why and "0.0123" in why for why in summary["stale"]["vit-p"])

    # a record its run no longer reproduces: interim stops and names the student and the field
    record = json.loads((results / "runs/get-p.json").read_text())
    record["rows"]["comparison"][0]["fid"] += 1
    (results / "runs/get-p.json").write_text(json.dumps(record))
    out = run(f"{BIN / 'python'} -m getlib.stages.interim params.yaml --recheck", repo, check=False)
    assert out.returncode != 0 and "get-p: its run, evaluated again, does not reproduce" in out.stderr
    assert "comparison row 0: fid" in out.stderr
    assert json.loads((results / "runs/get-p.json").read_text()) == record   # left as it was, for a look


# ------------------------------------------------------------------------------------------------
# The CIFAR-10 profiles at toy scale
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile, network", [("cifar10-uncond", "inception"), ("cifar10-cond", "classifier")])
def test_the_cifar10_profiles_run_at_toy_scale(tmp_path, monkeypatch, profile, network):
    """The profile as shipped, shrunk: synthetic images in CIFAR-10's layout, an untrained stand-in
    for EDM's checkpoint, a few pairs, two steps of GET-T/2 and a ViT, and the evaluation through the
    Inception road (clean-fid's loader and resize) with a stand-in network in place of the real
    weights, or with a classifier trained on the images."""
    import getlib.metrics as metrics
    from getlib.config import load_params
    from getlib.stages.data import prepare_data
    from getlib.stages.distill import distill
    from getlib.stages.evaluate import evaluate
    from getlib.stages.features import make_features
    from getlib.stages.figures import make_figures
    from getlib.stages.pairs import make_pairs
    from getlib.stages.teacher import make_teacher

    raw = yaml.safe_load((ROOT / "profiles" / f"{profile}.yaml").read_text())
    condition = raw["conditions"][0]
    edm = make_edm_repo(tmp_path / "external" / "edm-repo")
    make_edm_checkpoint(edm, tmp_path / raw["teacher"]["checkpoints"][condition], label_dim=10 * (condition == "cond"))
    make_cifar10(tmp_path / raw["data"]["root"])
    (tmp_path / "dvc.yaml").write_text("")
    raw["features"].update(network=network, epochs=1)
    monkeypatch.setattr(metrics, "INCEPTION_PATH", tmp_path / "inception-2015-12-05.pt")
    stand_in_inception(metrics.INCEPTION_PATH)
    raw["pairs"].update(num_pairs=8, shard_size=4, batch_size=4, nproc=1)
    raw["sampler"]["num_steps"] = 2
    raw["distill"].update(batch_size=4, max_steps=2, log_every=1, sample_every=2, snapshot_every=1, ckpt_every=1,
                          num_samples=4, num_workers=0, nproc=1)
    students = {"get-t": "GET-T/2", "vit-s": "ViT-S/2"}
    raw["students"] = {k: {"model": m, "condition": condition} for k, m in students.items()}
    raw["evaluate"].update(num_samples=6, seeds=1, batch_size=6, sweep_iterations=[1, 2])
    raw["figures"]["grid_samples"] = 10
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    p = load_params(tmp_path / "params.yaml")
    # as shipped, the profile opens only the published CIFAR-10 files and the pinned EDM pickles
    with pytest.raises(ValueError, match="data_batch_1: md5 .* is not the published"):
        prepare_data(p)
    raw["data"]["check_md5"] = False      # the stand-ins are neither
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    p = load_params(tmp_path / "params.yaml")

    assert prepare_data(p)["image_shape"] == [3, 32, 32]
    assert make_features(p)["network"] == {"inception": "inception-clean", "classifier": "cifar10-cnn"}[network]
    with pytest.raises(ValueError, match=f"edm-cifar10-32x32-{condition}-vp.pkl: sha256 .* is not an official"):
        make_teacher(p, condition)
    raw["teacher"]["trust_pickle"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    p = load_params(tmp_path / "params.yaml")
    assert make_teacher(p, condition)["kind"] == "edm"
    assert make_pairs(p, condition)["num_pairs"] == 8
    for key in students:
        assert distill(p, key)["steps"] == 2
    rows = evaluate(p)["comparison"]
    assert {r["source"] for r in rows} == {"real (held-out)", f"teacher ({condition})", *students}
    assert all(math.isfinite(r["fid"]) for r in rows)
    written = {Path(f).name for f in make_figures(p)}
    assert written >= {f"samples-{condition}.png", f"interpolation-{condition}.png", "fid_vs_iterations.png",
                       "one_step.md", "get_vs_vit.md", "benchmarks.md"}
    one_step = json.loads((tmp_path / "results" / profile / "tables" / "one_step.json").read_text())
    reported = [r for r in one_step if r["result"] == "reported"]
    assert reported and all(r["condition"] == condition for r in reported)   # the paper's numbers, marked
    measured = [r for r in one_step if r["result"] == "measured"]
    if network == "inception":   # the Inception Score comes with Inception features, and only with them
        assert all(math.isfinite(r["is"]) and r["is"] >= 1 - 1e-9 for r in measured)   # (exact values: test_evaluate)
    else:
        assert all(r["is"] is None for r in measured)
    assert any(r["is"] is not None for r in reported)
