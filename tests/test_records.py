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


def test_a_record_of_code_shown_equivalent_counts_as_made_by_the_code_now(tmp_path, monkeypatch):
    """results/code_equivalence.json carries a record's code identities forward, step by step in the
    file's order; an identity no step names stays as it was (and so stays stale)."""
    import getlib.records as records
    steps = [{"before": "r1", "train_code": ["t0", "t1"], "pairs_code": ["p0", "p1"], "evaluate_code": ["e0", "e1"],
              "rows_code": {"records.py": ["a0", "a1"], "stages/evaluate.py": ["b0", "b1"]}},
             {"before": "r2", "train_code": ["t1", "t2"], "pairs_code": ["p1", "p2"],   # showed training only
              "rows_code": {"records.py": ["a1", "a2"]}}]
    (tmp_path / "code_equivalence.json").write_text(json.dumps(steps))
    monkeypatch.setattr(records, "EQUIVALENCES", tmp_path / "code_equivalence.json")
    record = {"student": "get-p", "run": {"code": "t0", "settings": {}},
              "evaluation": {"code": "e0", "rows_code": {"records.py": "a0", "stages/evaluate.py": "bX"}}, "rows": {}}
    now = records.as_current_code(record)
    assert now["run"]["code"] == "t2" and now["evaluation"]["code"] == "e1"
    assert now["evaluation"]["rows_code"] == {"records.py": "a2", "stages/evaluate.py": "bX"}
    assert record["run"]["code"] == "t0"   # the record itself is left as it is
    monkeypatch.setattr(records, "EQUIVALENCES", tmp_path / "none.json")
    assert records.as_current_code(record) == record


def test_a_record_from_another_machine_on_the_same_upstream_counts_and_is_named_in_its_arm(tmp_path, monkeypatch):
    """The machine is run-to-run variation, not identity: a record made on another kind of CPU with
    this profile's pair set and feature network stands for its run, and its arm's row lists both
    machines; the same record with another pair set does not stand."""
    import getlib.records as records
    from getlib.claims import arm_rows
    shutil.copy(ROOT / "profiles" / "smoke.yaml", tmp_path / "params.yaml")
    p = load_params(tmp_path / "params.yaml", root=tmp_path)
    here, there = "cpu (AVX512), AMD EPYC, torch 2.14.1", "cpu (AVX2), Intel(R) Xeon(R), torch 2.14.1"
    run = {"settings": {"lr": 2e-3}, "pairs_manifest_sha256": "ab12", "code": "t0"}
    evaluation = {"features": {"feature_net.pt": "cd34"}, "code": "e0", "rows_code": {}}
    monkeypatch.setattr(records, "run_identity", lambda p, key: {**run, "device": here})
    monkeypatch.setattr(records, "evaluation_identity", lambda p: {**evaluation, "device": here})
    made_there = {"student": "get-p", "run": {**run, "device": there}, "evaluation": {**evaluation, "device": there},
                  "rows": _rows()}
    assert record_problems(p, "get-p", made_there) == []
    other_pairs = {**made_there, "run": {**made_there["run"], "pairs_manifest_sha256": "ef56"}}
    assert record_problems(p, "get-p", other_pairs) == ["run.pairs_manifest_sha256: recorded 'ef56', now 'ab12'"]
    other_features = {**made_there, "evaluation": {**evaluation, "features": {"feature_net.pt": "0000"}, "device": there}}
    assert [x.split(":")[0] for x in record_problems(p, "get-p", other_features)] == ["evaluation.features"]

    row = dict(condition="uncond", model="GET-P/2", recipe="truncated", lr=2e-3, num_pairs=None, shuffle_targets=False,
               batch_size=64, train_steps=4400, kind="GET")
    comparison = [{**row, "source": f"get-s{seed}", "train_seed": seed, "fid": 20.0 + seed} for seed in range(3)]
    (arm,) = arm_rows(comparison, {"get-s0": here, "get-s1": there, "get-s2": here})
    assert arm["runs"] == 3 and arm["training_seeds"] == "0, 1, 2" and arm["fid"] == 21.0
    assert arm["machines"] == f"{there}: 1; {here}: 2"


def test_a_record_is_made_here_only_under_this_machines_own_name(monkeypatch):
    """Only such a record is evaluated again to be reproduced (`interim --recheck`): a record from
    another machine, or one named before names held the CPU's model, is kept as it is."""
    import getlib.records as records
    monkeypatch.setattr(records, "machine", lambda device: "cpu (AVX2), AMD EPYC, torch 2.14.1")
    record = lambda device: {"run": {"settings": {"device": "auto"}, "device": device}}  # noqa: E731
    assert records.made_here(record("cpu (AVX2), AMD EPYC, torch 2.14.1"))
    assert not records.made_here(record("cpu (AVX2), torch 2.14.1"))
    assert not records.made_here(record("cpu (AVX2), Intel(R) Xeon(R), torch 2.14.1"))
