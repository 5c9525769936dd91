"""The committed notebooks: output-free, a `parameters` cell, a kernel name, one per stage in order."""
import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_one_notebook_per_stage_in_order():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    used = [next(d for d in (s.get("do") or s)["deps"] if d.endswith(".ipynb")) for s in stages.values()]
    assert [Path(u).name for u in used] == [n.name for n in NOTEBOOKS]
    assert [n.name[:3] for n in NOTEBOOKS] == [f"{i:02d}_" for i in range(1, len(NOTEBOOKS) + 1)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_with_parameters_and_a_kernel(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "clear the outputs before committing"
    tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1 and "params_file" in "".join(tagged[0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown"   # each notebook opens by saying what its stage does
