"""Publishing: only the stage command writes results/<profile>/ (a notebook run by hand leaves `git
status` clean), and no stage downstream of distill reads a wall-clock field (a re-run that changes only
timings triggers nothing). The end-to-end checks, every notebook run by hand on a finished smoke run,
are in test_pipeline.py."""
import csv
import json

import pytest
import yaml

import getlib.notebook as notebook
from getlib.config import load_params
from getlib.notebook import publishing, set_publish, unpublished
from getlib.stages.data import prepare_data
from getlib.stages.distill import distill
from getlib.stages.pairs import make_pairs
from getlib.stages.teacher import make_teacher
from conftest import ROOT

CLOCK = {"seconds", "images_per_s", "pairs_per_s"}   # fields measured with a clock


def _fields(path) -> set[str]:
    """The keys of a JSON file (of its rows, for a list) or the columns of a CSV file."""
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return set(next(csv.reader(f), []))
    data = json.loads(path.read_text())
    rows = data if isinstance(data, list) else [data]
    return {k for r in rows if isinstance(r, dict) for k in r}


@pytest.fixture
def one_vit(tmp_path):
    """The smoke profile cut to one condition and one ViT trained 4 steps, in a project folder."""
    raw = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    raw.update(conditions=["uncond"], students={"vit-p": {"model": "ViT-P/2", "condition": "uncond"}})
    raw["pairs"].update(num_pairs=64, shard_size=32, batch_size=32)
    raw["teacher"].update(max_steps=2)
    raw["distill"].update(max_steps=4, log_every=2, ckpt_every=2, sample_every=2, snapshot_every=None)
    (tmp_path / "dvc.yaml").write_text("")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return load_params(tmp_path / "params.yaml")


def test_stage_functions_run_unpublished_write_nothing_under_results(one_vit):
    p = one_vit
    assert publishing()   # called from Python, stage functions publish (as the pipeline's tools expect)
    with unpublished():
        assert not publishing()
        assert prepare_data(p)["train"] > 0
        make_teacher(p, "uncond")
        assert make_pairs(p, "uncond")["num_pairs"] == 64
        assert distill(p, "vit-p")["steps"] == 4
    assert publishing() and not p.results().exists()   # the stage's work done, results/ untouched
    assert (p.work("students", "vit-p", "student.pt")).is_file()

    distill(p, "vit-p")   # published: the run kept as it is, its results written
    assert _fields(p.results("train", "vit-p.json")).isdisjoint(CLOCK)
    assert _fields(p.results("train", "vit-p.csv")) >= {"step", "loss"}
    assert _fields(p.results("train", "vit-p.csv")).isdisjoint(CLOCK)
    assert _fields(p.results("timing", "vit-p.csv")) == {"step", "images_per_s", "seconds"}
    timing = json.loads(p.results("timing", "vit-p.json").read_text())
    assert timing["student"] == "vit-p" and timing["seconds"] > 0
    steps = lambda name: [r["step"] for r in csv.DictReader(open(p.results(*name)))]  # noqa: E731
    assert steps(("train", "vit-p.csv")) == steps(("timing", "vit-p.csv")) == ["2", "4"]
    assert p.results("train", "vit-p.csv").read_text() == p.work("students", "vit-p", "metrics.csv").read_text()


def test_publish_must_be_a_bool():
    with pytest.raises(TypeError, match="publish must be True or False"):
        set_publish("False")   # a string from a command line would be true
    assert publishing()


def test_only_the_stage_command_publishes(monkeypatch, tmp_path):
    """getlib.notebook executes a notebook with publish = True (a bool, whatever else -p gives);
    asking for another value is refused: by hand, run the notebook itself."""
    import papermill
    calls = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda nb, out, parameters, **kw: calls.append(parameters))
    monkeypatch.setattr(notebook, "render_markdown", lambda executed, rendered: [])
    args = ["notebooks/05_distill.ipynb", str(tmp_path / "x.ipynb"), str(tmp_path / "x.md")]
    notebook.main(args + ["-p", "student", "get-p"])
    assert calls == [{"student": "get-p", "publish": True}]
    with pytest.raises(SystemExit):
        notebook.main(args + ["-p", "publish", "False"])
    assert len(calls) == 1


def test_no_stage_after_distill_depends_on_a_timing_file():
    """The distill stage writes its wall-clock fields to results/<profile>/timing/, which no stage
    lists as a dep; the figures stage's results/ deps are the evaluation and the untimed train/ logs
    (the evaluation's images/s are shown by the figures stage's tables: they are its input)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    deps = {name: (s.get("do") or s)["deps"] for name, s in stages.items()}
    assert not [(name, d) for name, ds in deps.items() for d in ds if "timing" in d]
    assert {d for d in deps["figures"] if d.startswith("results/")} == {"results/${profile}/evaluation",
                                                                       "results/${profile}/runs",
                                                                       "results/${profile}/train"}
    distill = stages["distill"]["do"]
    metrics = [next(iter(m)) for m in distill["metrics"]]
    plots = [next(iter(m)) for m in distill["plots"]]
    assert metrics == ["results/${profile}/timing/${key}.json"]
    assert plots == ["results/${profile}/train/${key}.csv", "results/${profile}/timing/${key}.csv"]
