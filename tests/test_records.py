"""A student's evaluation record (getlib.records): what makes two evaluations of one run differ."""
import json
import shutil

import pytest

from getlib.config import load_params
from getlib.records import TABLES, read_record, record_path, record_problems, score_differences
from conftest import ROOT


def _rows(fid=20.0, images_per_s=900.0):
    return {"comparison": [{"source": "get-p", "fid": fid, "images_per_s": images_per_s, "params": 288516}],
            "iterations": [], "decoding": [], "fixed_point": [],
            "training": [{"student": "get-p", "step": 800, "fid": fid + 5}]}


def test_the_same_scores_measured_at_another_speed_agree():
    assert score_differences(_rows(), _rows(images_per_s=450.0)) == []
    assert set(TABLES) == set(_rows())


def test_a_changed_score_or_a_missing_row_is_named():
    assert score_differences(_rows(), _rows(fid=20.5)) == [
        "comparison row 0: fid 20.0 -> 20.5", "training row 0: fid 25.0 -> 25.5"]
    fewer = _rows()
    fewer["training"] = []
    assert score_differences(_rows(), fewer) == ["training: 1 recorded rows, 0 now"]


def test_a_record_must_be_the_students_and_is_stale_without_its_pair_set(tmp_path):
    shutil.copy(ROOT / "profiles" / "smoke.yaml", tmp_path / "params.yaml")
    p = load_params(tmp_path / "params.yaml", root=tmp_path)
    record = {"student": "vit-p", "run": {"settings": {}}, "evaluation": {}, "rows": _rows()}
    record_path(p, "get-p").parent.mkdir(parents=True)
    record_path(p, "get-p").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="the record of student 'vit-p', not of 'get-p'"):
        read_record(p, "get-p")
    record_path(p, "get-p").write_text(json.dumps({"student": "get-p", "rows": {}}))
    with pytest.raises(ValueError, match=r"get-p.json: not a run record \(needs student, run, evaluation"):
        read_record(p, "get-p")
    assert read_record(p, "vit-p") is None
    problems = record_problems(p, "vit-p", record)   # no pairs made in tmp_path
    assert len(problems) == 1 and "manifest.json is not here" in problems[0]
