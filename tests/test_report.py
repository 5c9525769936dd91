"""getlib.report: each number against its committed value under its rule, and the command on a tiny git repository."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from getlib.report import RULES, compare, main
from conftest import ROOT

# trimmed from results/digits/ (the clock-measured fields kept, to show they are ignored)
COMPARISON = [
    {"source": "real (held-out)", "nfe": 0, "fid": 15.147990650294332, "fid_std": 0.0, "kid": 0.004920036066323519,
     "n": 450, "features": "digits-cnn", "condition": "-", "kind": "real"},
    {"source": "teacher (uncond)", "nfe": 35, "fid": 11.262582812162009, "fid_std": 1.7533145760910331,
     "kid": -0.0007851851017524799, "n": 450, "seeds": 3, "images_per_s": 173.01552906208204, "peak_mib": None,
     "features": "digits-cnn", "condition": "uncond", "kind": "teacher"},
    {"source": "get-p", "nfe": 6, "fid": 22.933464696757785, "fid_std": 3.15008616311111, "kid": 0.006481221178546548,
     "n": 450, "seeds": 3, "images_per_s": 2123.0317627435684, "peak_mib": None, "features": "digits-cnn",
     "condition": "uncond", "kind": "GET", "model": "GET-P/2"},
]
FEATURES = {"network": "digits-cnn", "n_reference": 1347, "held_out_accuracy": 0.9888888597488403, "epochs": 40,
            "seconds": 18.35349937000001}
TEACHER = {"condition": "uncond", "kind": "embedded", "steps": 800, "seconds": 173.15341558199998,
           "final_loss": 30.539864936452776, "params": 677761}


def files(comparison=COMPARISON, features=FEATURES, teacher=TEACHER) -> dict[str, str]:
    out = {"evaluation/comparison.json": comparison, "features.json": features, "teacher-uncond.json": teacher}
    return {name: json.dumps(v, indent=2) for name, v in out.items() if v is not None}


def moved(source: str, by) -> list[dict]:
    """COMPARISON with `source`'s fid replaced by by(row)."""
    return [{**r, "fid": by(r)} if r["source"] == source else r for r in COMPARISON]


def verdicts(rows: list[dict]) -> dict[str, str]:
    return {r["metric"]: r["verdict"] for r in rows}


def test_files_equal_to_the_committed_ones_were_not_re_made_here():
    """Byte for byte, clock fields included: pulled, or its stage did not run; not a reproduction."""
    rows = compare(files(), files())
    assert [r["metric"] for r in rows] == ["feature network held-out accuracy", "teacher (uncond) final loss",
                                           "FID real (held-out)", "FID teacher (uncond)", "FID get-p (uncond)"]
    assert {r["verdict"] for r in rows} == {"not re-made"}


def test_clock_fields_and_kid_are_not_compared():
    here = files([{**r, "images_per_s": 1.0, "kid": 9.0} for r in COMPARISON], {**FEATURES, "seconds": 1.0},
                 {**TEACHER, "seconds": 1.0})
    assert {r["verdict"] for r in compare(files(), here)} == {"identical"}


@pytest.mark.parametrize("sds, verdict", [(3, "OUTSIDE"), (-3, "OUTSIDE"), (1, "within"), (-1.9, "within")])
def test_a_students_fid_passes_within_2_committed_sd(sds, verdict):
    rows = compare(files(), files(moved("get-p", lambda r: r["fid"] + sds * r["fid_std"])))
    row = next(r for r in rows if r["metric"] == "FID get-p (uncond)")
    assert row["verdict"] == verdict and row["rule"] == "seeds"
    assert row["tolerance"] == f"{RULES['seeds'].text} (±6.3)"
    assert all(r["verdict"] == ("identical" if r["metric"].startswith("FID") else "not re-made")
               for r in rows if r is not row)


@pytest.mark.parametrize("factor, verdict", [(1.10, "OUTSIDE"), (0.90, "OUTSIDE"), (1.01, "within"), (0.96, "within")])
def test_the_floor_without_spread_passes_within_5_percent(factor, verdict):
    rows = compare(files(), files(moved("real (held-out)", lambda r: r["fid"] * factor)))
    row = next(r for r in rows if r["metric"] == "FID real (held-out)")
    assert row["verdict"] == verdict and row["rule"] == "relative"
    assert row["tolerance"] == f"{RULES['relative'].text} (±0.757)"


@pytest.mark.parametrize("accuracy, verdict", [(0.9839, "within"), (0.975, "OUTSIDE")])
def test_feature_accuracy_passes_within_1_point(accuracy, verdict):
    rows = compare(files(), files(features={**FEATURES, "held_out_accuracy": accuracy}))
    assert verdicts(rows)["feature network held-out accuracy"] == verdict


@pytest.mark.parametrize("loss, verdict", [(31.9, "within"), (32.2, "OUTSIDE")])
def test_teacher_loss_passes_within_5_percent(loss, verdict):
    rows = compare(files(), files(teacher={**TEACHER, "final_loss": loss}))
    assert verdicts(rows)["teacher (uncond) final loss"] == verdict


def test_missing_here_and_new_here():
    here = files(COMPARISON[:2] + [{**COMPARISON[2], "source": "vit-p"}], teacher=None)
    v = verdicts(compare(files(), here))
    assert v["teacher (uncond) final loss"] == "missing" and v["FID get-p (uncond)"] == "missing"
    assert v["FID vit-p (uncond)"] == "new"
    assert v["FID real (held-out)"] == "identical"


def test_a_bad_file_is_named():
    with pytest.raises(ValueError, match=r"features.json \(this machine\): held_out_accuracy must be a number"):
        compare(files(), files(features={"network": "digits-cnn"}))


# ------------------------------------------------------------------------------------------------
# The command, on a git repository of its own
# ------------------------------------------------------------------------------------------------

def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false",
                    *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy(ROOT / "profiles" / "digits.yaml", tmp_path / "params.yaml")   # (profile: digits)
    for name, text in files().items():
        (tmp_path / "results" / "digits" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / "digits" / name).write_text(text)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "results")
    monkeypatch.chdir(tmp_path / "results")    # the project root is found upwards
    return tmp_path


def test_main_reports_identical_results_and_says_when_nothing_was_re_made(project, capsys):
    assert main([]) == 2   # the working tree is the commit: nothing to compare
    captured = capsys.readouterr()
    assert captured.out.count("| not re-made |") == 5 and "no number of results/digits/ was re-made here" in captured.err
    for name, text in files(features={**FEATURES, "seconds": 1.0}, teacher={**TEACHER, "seconds": 2.0},
                            comparison=[{**r, "images_per_s": 3.0} for r in COMPARISON]).items():
        (project / "results" / "digits" / name).write_text(text)   # re-made: other timings, the same numbers
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "results/digits/" in out and "at HEAD" in out
    assert out.count("| identical |") == 5
    assert out.rstrip().endswith("5 of 5 numbers within tolerance (5 identical to the last digit); OUTSIDE: none")


def test_main_names_a_number_outside_and_writes_the_table(project, capsys):
    comparison = project / "results" / "digits" / "evaluation" / "comparison.json"
    comparison.write_text(json.dumps(moved("get-p", lambda r: r["fid"] + 3 * r["fid_std"])))
    assert main(["--markdown", str(project / "report.md")]) == 1
    out = capsys.readouterr().out
    assert "| metric | this machine | committed | tolerance | verdict |" in out
    assert "| FID get-p (uncond) | 32.38372318609112 | 22.933464696757785 | 2 sd of the committed seed ranges (±6.3) | OUTSIDE |" in out
    assert out.rstrip().endswith("2 of 3 numbers within tolerance (2 identical to the last digit); OUTSIDE: FID get-p (uncond); "
                                 "not re-made: feature network held-out accuracy, teacher (uncond) final loss")
    assert (project / "report.md").read_text() == out


def test_main_refuses_an_unknown_profile_or_revision(project, capsys):
    assert main(["--profile", "cifar"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'cifar'" in err and "profiles there: digits" in err
    assert main(["--against", "no-such-rev"]) == 2
    assert "no-such-rev" in capsys.readouterr().err
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + "lrr: 1\n")
    assert main([]) == 2   # the profile comes from params.yaml, read (and refused) as every stage reads it
    assert "unknown key(s) ['lrr']" in capsys.readouterr().err
