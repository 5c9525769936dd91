"""The committed notebooks: output-free, a `parameters` cell, a kernel name, one per stage in order."""
import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_one_notebook_per_stage_in_order():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    used = [next(d for d in (s.get("do") or s)["deps"] if d.endswith(".ipynb")) for name, s in stages.items()
            if name != "check"]   # (the first stage checks params.yaml, no notebook)
    assert list(stages)[0] == "check"
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_publishes_only_under_the_stage_command_and_says_so(path):
    """`publish = False` in the parameters cell (getlib.notebook sets True), handed to set_publish
    before any stage function runs, and the rule stated in the opening cell."""
    nb = json.loads(path.read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    parameters = next(src for c, src in zip([c for c in nb["cells"] if c["cell_type"] == "code"], code)
                      if "parameters" in c["metadata"].get("tags", []))
    assert "\npublish = False" in parameters
    first_stage_call = next(i for i, src in enumerate(code) if "from getlib.stages." in src)
    assert any("set_publish(publish)" in src for src in code[:first_stage_call])
    opening = "".join(nb["cells"][0]["source"])
    assert "publish = False" in opening and "results/<profile>/" in opening and "git status" in opening


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_cells_make_no_claim_about_one_profiles_run(path):
    """What depends on the profile (the recipe, the number of supervised states, the NFE, the
    students' names) is generated from the settings in code cells (getlib.views), not written in prose."""
    import re
    nb = json.loads(path.read_text())
    prose = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    for claim in (r"\b\d+ (NFE|network evaluations|evaluations per image)", r"\b0\.8\^", r"\ball \d+ unrolled",
                  r"\bthe loss is the paper's", r"\bget-p\b|\bvit-p\b", r"\b\d+ noise levels"):
        assert not re.search(claim, prose, flags=re.I), (path.name, claim)
