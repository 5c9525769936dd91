"""A student's evaluation record (getlib.records): what makes two evaluations of one run differ."""
from getlib.records import TABLES, score_differences


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
