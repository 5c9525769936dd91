"""params.yaml: every profile is valid, the shipped file is the digits profile, and a broken file
fails with a message that names the key."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from getlib.claims import token_counts
from getlib.config import ParamsError, load_params
from getlib.models import GET_models, ViT_models
from conftest import ROOT

PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))


def test_the_shipped_params_are_the_digits_profile():
    assert (ROOT / "params.yaml").read_text() == (ROOT / "profiles" / "digits.yaml").read_text()


def test_the_four_profiles_exist():
    assert {p.stem for p in PROFILES} >= {"digits", "smoke", "cifar10-uncond", "cifar10-cond"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_profile_loads_and_names_its_results_folder(path):
    p = load_params(path)
    assert p.profile == path.stem
    for key in p.students:
        cfg = p.train_config(key)
        assert cfg.model in {**GET_models, **ViT_models}
        assert Path(cfg.out).parts[-4:] == ("work", p.profile, "students", key)
        assert Path(cfg.pairs).parts[-3:] == (p.profile, "pairs", p.students[key].condition)


def test_a_profile_file_read_with_the_project_root_builds_the_pipelines_paths():
    p = load_params(ROOT / "profiles" / "claims.yaml", root=ROOT)
    assert p.work("students", "vit-lr2e3-s0") == ROOT / "work" / "claims" / "students" / "vit-lr2e3-s0"
    assert load_params(ROOT / "profiles" / "claims.yaml").root == ROOT / "profiles"   # default: the file's folder


def test_the_claims_profile_gives_both_families_the_same_learning_rates():
    p = load_params(ROOT / "profiles" / "claims.yaml")
    grid = {}
    for key in p.students:
        cfg = p.train_config(key)
        if not cfg.num_pairs and not cfg.shuffle_targets:
            grid.setdefault((cfg.model, cfg.deq.get("recipe"), bool(cfg.deq.get("state_norm"))), set()).add(cfg.lr)
    families = [("ViT-P/2", None, False), ("ViT-U/2", None, False), ("GET-P/2", "truncated", False),
                ("GET-P/2", "paper", False), ("GET-P/2", "truncated", True)]
    assert all({1e-3, 2e-3, 4e-3} <= grid[f] for f in families), grid   # a family may go further, never less far
    study = {k: p.train_config(k) for k in p.students if p.train_config(k).max_steps == 8800}
    for key in set(p.students) - set(study):   # trained longer: a continuation of a run of the study's budget
        cfg = p.train_config(key)
        assert cfg.max_steps > 8800 and any(dataclasses.replace(cfg, max_steps=8800, out=s.out) == s
                                            for s in study.values()), key


def test_the_64_token_block_changes_only_the_students():
    """claims-64: the 16-token study's data, teacher, sampler, pairs, scoring and training settings but
    the stated budget; every 16-token arm (patch 2) also runs at 64 tokens (patch 1) with the same
    recipe and learning rate, and has 3 training seeds."""
    study, block = (yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text()) for name in ("claims", "claims-64"))
    for section in ("data", "features", "teacher", "sampler", "pairs", "evaluate", "conditions", "reuse"):
        assert block[section] == study[section], section
    changed = {"max_steps": 4400, "snapshot_every": 550, "deq": {"recipe": "truncated", "state_norm": True},
               "compile": False}
    assert {k: v for k, v in block["distill"].items() if k not in changed} == \
        {k: v for k, v in study["distill"].items() if k not in changed}
    assert {k: block["distill"][k] for k in changed} == changed
    p = load_params(ROOT / "profiles" / "claims-64.yaml")
    arms, seeds = {}, {}
    for key in p.students:
        cfg = p.train_config(key)
        patch = {64: 1, 16: 2}[token_counts([cfg.model], 8)[cfg.model]]
        arm = (cfg.model[:3], cfg.deq.get("recipe"), bool(cfg.deq.get("state_norm")), cfg.lr)
        arms.setdefault(patch, set()).add(arm)
        seeds.setdefault((patch, arm), set()).add(cfg.seed)
        assert ("-p1-" in key) == (patch == 1), key   # the name says the token count
        assert (cfg.batch_size, cfg.num_pairs, cfg.shuffle_targets) == (64, None, False), key
    assert arms[2] <= arms[1], arms[2] - arms[1]
    assert all(seeds[2, arm] == {0, 1, 2} for arm in arms[2])


def _dvc_params():
    """Every params.yaml key a dvc.yaml stage lists (foreach items expanded over a profile)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    keys = []
    for stage in stages.values():
        keys += (stage.get("do") or stage).get("params", [])
    return keys


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_key_dvc_tracks_is_spelled_out_in_every_profile(path):
    raw = yaml.safe_load(path.read_text())
    for key in _dvc_params():
        for student in (raw["students"] if "${key}" in key else [None]):
            node = raw
            for part in key.replace("${key}", str(student)).split("."):
                assert isinstance(node, dict) and part in node, f"{path.name} lacks {key} (dvc.yaml lists it)"
                node = node[part]


def test_the_paper_profiles_use_the_papers_recipe():
    p = load_params(ROOT / "profiles" / "cifar10-uncond.yaml")
    cfg = p.train_config("get-t")
    assert (cfg.lr, cfg.batch_size, cfg.max_steps, cfg.ema_decay, cfg.loss, cfg.gamma, cfg.weight_decay) == \
        (1e-4, 128, 800_000, 0.9999, "l1", 0.8, 0.0)
    assert cfg.deq == {} and p.pairs.num_pairs == 1_000_000 and p.sampler.nfe == 35
    assert p.features.network == "inception" and p.evaluate.num_samples == 50_000
    assert load_params(ROOT / "profiles" / "cifar10-cond.yaml").train_config("get-b").batch_size == 256


def write(tmp_path, edit):
    raw = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("edit, key", [
    (lambda r: r.update(tecaher={}), "tecaher"),
    (lambda r: r["teacher"].update(lrr=1), "lrr"),
    (lambda r: r["teacher"].update(max_steps="many"), "teacher.max_steps"),
    (lambda r: r["pairs"].update(image_dtype="int8"), "pairs.image_dtype"),
    (lambda r: r["distill"].update(lr="fast"), "lr"),
    (lambda r: r["distill"].update(batch_size=0), "batch_size"),
    (lambda r: r["distill"]["deq"].update(f_solver="newton"), "f_solver"),
    (lambda r: r["students"]["get-p"].update(model="GET-Z/2"), "students.get-p.model"),
    (lambda r: r["students"]["get-p"].update(condition="both"), "students.get-p.condition"),
    (lambda r: r["students"]["get-p"].update(train={"out": "elsewhere"}), "students.get-p.train"),
    (lambda r: r["students"]["vit-p"].update(train={"deq": {"f_max_iter": 3}}), "students.vit-p.train"),
    (lambda r: r.update(conditions=["uncond"]), "students.get-p-cond.condition"),
    (lambda r: r["evaluate"].update(sweep_solvers=["broyden"]), "evaluate.sweep_solvers"),
    (lambda r: r["data"].update(dataset="mnist"), "data.dataset"),
    (lambda r: r["evaluate"].update(seed_start=100), "evaluate.seed_start"),
    (lambda r: r["features"].update(network="inception"), "features.network"),
    (lambda r: r["teacher"].update(source="checkpoint", checkpoints={"uncond": "edm.pkl"}), "teacher.edm_repo"),
])
def test_a_broken_file_names_the_key(tmp_path, edit, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        load_params(write(tmp_path, edit))


def test_yaml_numbers_written_like_1e_3_are_numbers(tmp_path):
    path = write(tmp_path, lambda r: r["students"]["get-p"].update(train={"lr": "1e-3"}))
    assert load_params(path).train_config("get-p").lr == 1e-3


def test_a_missing_teacher_checkpoint_is_named(tmp_path):
    from getlib.stages.teacher import make_teacher
    path = write(tmp_path, lambda r: r["teacher"].update(source="checkpoint", edm_repo="edm",
                                                          checkpoints={"uncond": "missing/edm-uncond.pkl"}))
    p = load_params(path)
    with pytest.raises(ParamsError, match=r"teacher\.checkpoints\.uncond: no file at .*missing/edm-uncond\.pkl"):
        make_teacher(p, "uncond")
    with pytest.raises(ParamsError, match=r"teacher\.checkpoints\.cond is not set"):
        make_teacher(p, "cond")
    assert not p.work().exists()  # nothing was written


def test_asking_for_cuda_without_a_gpu_is_named():
    import torch

    from getlib.config import device_of
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ParamsError, match="device: cuda was asked for, but torch sees no GPU"):
        device_of("cuda")
    assert device_of("auto").type == "cpu"


def test_the_settings_name_what_the_registries_hold():
    from getlib.deq import GRADIENTS, LOSSES, SOLVERS
    from getlib.models import GET_models, ViT_models
    from getlib.settings import GET_CONFIGS, GRADIENT_NAMES, LOSS_NAMES, SOLVER_NAMES, VIT_CONFIGS
    assert set(SOLVER_NAMES) == set(SOLVERS) and set(GRADIENT_NAMES) == set(GRADIENTS)
    assert set(LOSS_NAMES) == set(LOSSES)
    assert set(GET_CONFIGS) == set(GET_models) and set(VIT_CONFIGS) == set(ViT_models)


def test_validating_params_needs_none_of_the_librarys_code():
    """Every stage runs config.py: it must not import the models, solvers, sampler or training, or an
    edit of any of them would re-run every stage (dvc.yaml lists each stage's import closure). It
    needs only the settings dataclasses and the one device resolver."""
    from getlib.provenance import import_closure
    assert import_closure("getlib.config") == ["getlib", "getlib.config", "getlib.devices", "getlib.settings"]


def test_the_check_stage_refuses_in_one_line_and_writes_its_token_only_when_valid(tmp_path, monkeypatch, capsys):
    """`python -m getlib.stages.check`: a bad params.yaml, or a Python without the project's
    environment, is one line on stderr and no token; a valid one writes the same token every time."""
    import sys

    from getlib.stages import check
    token = tmp_path / "work" / "checked"
    assert check.main([str(ROOT / "params.yaml"), str(token)]) == 0
    assert token.read_bytes() == check.TOKEN
    token.unlink()
    bad = tmp_path / "params.yaml"
    bad.write_text((ROOT / "params.yaml").read_text().replace("  lr: 2.0e-3", "  lrr: 2.0e-3"))
    assert check.main([str(bad), str(token)]) == 1 and not token.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown training setting(s) ['lrr']" in err[0]
    monkeypatch.setitem(sys.modules, "papermill", None)   # (importing it then fails, as outside the venv)
    assert check.main([str(ROOT / "params.yaml"), str(token)]) == 1 and not token.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no 'papermill': run DVC from the project's environment" in err[0]
    assert check.main([]) == 2
