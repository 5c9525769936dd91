"""The DVC store in the repository (store/, the default remote): a fresh copy pulls the default's
artifacts with the bytes of dvc.lock and has nothing to re-make, and every study's lock names an
upstream that is in the store and is the one its committed records were trained and scored on."""
import hashlib
import json
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT
from test_pipeline import ran, run

STUDIES = {"digits": ROOT / "dvc.lock", "claims": ROOT / "profiles" / "claims.lock",
           "claims-64": ROOT / "profiles" / "claims-64.lock"}
UPSTREAM = {"check", "data", "features", "teacher@uncond", "pairs@uncond"}


def stored(md5: str) -> bytes:
    """A file of the store by its DVC hash (DVC 3's layout: files/md5/<2>/<30>, a folder's listing as .dir)."""
    return (ROOT / "store" / "files" / "md5" / md5[:2] / md5[2:]).read_bytes()


def folder(lock: dict, stage: str, path: str) -> dict[str, str]:
    """{file: md5} of the cached folder `path` of `stage`, from the store."""
    out = next(o for o in lock["stages"][stage]["outs"] if o["path"] == path)
    return {entry["relpath"]: entry["md5"] for entry in json.loads(stored(out["md5"]))}


def sha256(md5: str) -> str:
    return hashlib.sha256(stored(md5)).hexdigest()


def test_the_shipped_lock_is_the_default_profiles():
    assert (ROOT / "dvc.lock").read_text() == (ROOT / "profiles" / "digits.lock").read_text()


@pytest.mark.parametrize("profile", sorted(STUDIES))
def test_a_profiles_lock_names_an_upstream_in_the_store_that_its_records_were_made_on(profile):
    """Each cached output of the lock is in the store, file by file; its pair set's manifest and its
    feature network are the ones every committed record of the profile holds (results/<p>/runs/)."""
    lock = yaml.safe_load(STUDIES[profile].read_text())
    assert UPSTREAM <= set(lock["stages"])
    for name, stage in lock["stages"].items():
        for out in stage["outs"]:
            if out["path"].startswith("work/") and "/notebooks/" not in out["path"] + "/":
                stored(out["md5"])   # (the file, or the folder's listing)
                if out["md5"].endswith(".dir"):
                    for md5 in folder(lock, name, out["path"]).values():
                        stored(md5)
    pairs = folder(lock, "pairs@uncond", f"work/{profile}/pairs/uncond")
    features = {f: sha256(md5) for f, md5 in folder(lock, "features", f"work/{profile}/features").items()
                if f.endswith((".npy", ".pt"))}
    records = [json.loads(f.read_text()) for f in sorted((ROOT / "results" / profile / "runs").glob("*.json"))]
    assert records
    for r in records:
        assert r["run"]["pairs_manifest_sha256"] == sha256(pairs["manifest.json"]), r["student"]
        assert r["evaluation"]["features"] == features, r["student"]


@pytest.mark.parametrize("profile", ["claims", "claims-64"])
def test_a_studys_lock_is_its_profiles_upstream_and_current_code(profile):
    """What `dvc status` would find: the study's params and the code of its upstream stages are those
    the lock holds, so after `make pull PROFILE=...` only its students remain to run."""
    lock = yaml.safe_load(STUDIES[profile].read_text())["stages"]
    params = yaml.safe_load((ROOT / "profiles" / f"{profile}.yaml").read_text())
    for name, stage in lock.items():
        for dep in stage["deps"]:
            if not dep["path"].startswith("work/"):
                path = ROOT / (dep["path"] if dep["path"] != "params.yaml" else f"profiles/{profile}.yaml")
                assert hashlib.md5(path.read_bytes()).hexdigest() == dep["md5"], (name, dep["path"])
        for key, value in stage.get("params", {}).get("params.yaml", {}).items():
            here = params
            for part in key.split("."):
                here = here[part]
            assert here == value, (name, key)


@pytest.mark.slow
def test_a_fresh_copy_pulls_the_default_and_has_nothing_to_run(tmp_path):
    """`dvc pull` from the store gives every artifact of dvc.lock with its bytes: `dvc status` is
    clean and `dvc repro` runs nothing (offline: the store is a folder of the repository); adopted,
    the pulled runs are finished runs to the distill stage and its notebook (make pull does both)."""
    repo = tmp_path / "project"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    run("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm copy", repo)
    run("dvc pull -r store", repo)
    assert "up to date" in run("dvc status", repo).stdout
    assert ran(run("dvc repro", repo)) == set()
    assert run("git status --porcelain", repo).stdout == ""
    # the pulled runs lack their provenance record (.dvcignore): adopted, the stage keeps them
    assert "kept as finished: get-p, vit-p" in run("python -m getlib.stages.distill params.yaml --adopt-pulled", repo).stdout
    finished = ("from getlib.config import load_params; from getlib.runs import run_is_finished; "
                "p = load_params('params.yaml'); print(all(run_is_finished(p.train_config(k)) for k in p.students))")
    assert run(f'python -c "{finished}"', repo).stdout.strip() == "True"


def test_the_readme_states_the_stores_size():
    size = sum(f.stat().st_size for f in (ROOT / "store").rglob("*") if f.is_file()) / 1e6
    stated = int(re.search(r"a DVC remote inside the repository \((\d+) MB", (ROOT / "README.md").read_text()).group(1))
    assert abs(stated - size) < 1, f"README says {stated} MB, the store holds {size:.1f} MB"
