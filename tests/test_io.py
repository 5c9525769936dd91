"""Atomic writes and the byte-identical .npz that DVC's caching relies on."""
import numpy as np
import pytest

from getlib.io import atomic_save_npz, atomic_write


def test_npz_is_byte_identical_whenever_written_and_numpy_reads_it(tmp_path, monkeypatch):
    arrays = dict(images=np.arange(12, dtype=np.uint8).reshape(3, 4), name=np.array("digits"))
    atomic_save_npz(tmp_path / "a.npz", **arrays)
    monkeypatch.setattr("time.time", lambda: 2e9)   # another day: numpy.savez would stamp it
    atomic_save_npz(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as f:
        assert (f["images"] == arrays["images"]).all() and str(f["name"]) == "digits"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_an_empty_table_is_written_with_no_rows(tmp_path):
    from getlib.io import read_csv, read_json, write_results
    write_results([], tmp_path, "empty", "Nothing to compare")   # e.g. GET against ViT without a ViT
    assert read_json(tmp_path / "empty.json") == [] and read_csv(tmp_path / "empty.csv") == []
    assert (tmp_path / "empty.md").read_text().startswith("# Nothing to compare")


def test_a_markdown_table_shows_a_dash_where_nothing_applies(tmp_path):
    """None, NaN and a column a row lacks are all "-" in the .md (never NaN); the .json keeps null."""
    from getlib.io import read_json, write_results
    rows = [{"source": "real", "fid": 15.3, "params": None}, {"source": "get", "fid": float("nan"), "params": 7,
                                                              "recipe": "paper"}]
    write_results(rows, tmp_path, "t", "A table")
    md = (tmp_path / "t.md").read_text()
    assert "| real | 15.3 | - | - |" in md and "| get | - | 7 | paper |" in md and "nan" not in md.lower()
    assert read_json(tmp_path / "t.json")[0]["params"] is None
