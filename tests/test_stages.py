"""Stage functions called directly (the pipeline test runs them through DVC and papermill)."""
from pathlib import Path

import yaml

from getlib import stages
from getlib.config import load_params
from getlib.pairs import PairDataset, read_manifest
from conftest import ROOT



def smoke_params(folder: Path, **pairs):
    raw = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    raw["pairs"].update(pairs)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    return load_params(folder / "params.yaml")


def test_a_pair_set_left_by_other_settings_is_replaced_and_a_finished_one_kept(tmp_path):
    p = smoke_params(tmp_path, num_pairs=120, shard_size=50)
    stages.prepare_data(p)
    stages.make_teacher(p, "uncond")
    stages.make_pairs(p, "uncond")
    root = p.work("pairs", "uncond")
    first = read_manifest(root)
    assert first["num_pairs"] == 120 and len(first["shards"]) == 3
    inode = (root / first["shards"][0]["file"]).stat().st_ino   # written atomically: a rewrite is a new file

    stages.make_pairs(p, "uncond")   # same settings: the finished set is kept as it is
    assert (root / first["shards"][0]["file"]).stat().st_ino == inode

    p = smoke_params(tmp_path, num_pairs=80, shard_size=50)   # another count: rebuilt from scratch
    stages.make_pairs(p, "uncond")
    second = read_manifest(root)
    assert second["num_pairs"] == 80 and [s["count"] for s in second["shards"]] == [50, 30]
    assert sorted(f.name for f in (root / "shards").iterdir()) == sorted(Path(s["file"]).name for s in second["shards"])
    assert len(PairDataset(root, verify="sha256")) == 80
