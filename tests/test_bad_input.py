"""Bad input, one case per row: each is refused with a message that names the file, key or name at
fault, and nothing finished (a pair set, a run, a folder beside the project) changes."""
import dataclasses
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import getlib.pairs as pairs
import getlib.runs as runs_module
import getlib.train as train_module
from getlib.config import ParamsError, load_params
from getlib.edm import SamplerConfig
from getlib.io import remove_owned
from getlib.pairs import PairDataset, PairSpec, generate_pairs, import_released_pairs, pair_set_problems
from getlib.models import load_student
from getlib.stages.distill import distill
from getlib.runs import resume_problems
from getlib.train import TrainConfig, train
from conftest import ROOT

SMOKE = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
SAMPLER = SamplerConfig(num_steps=2)
TEACHER = {"kind": "test", "name": "toy"}


def toy_teacher(scale=1.0):
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)) * 0.1

    def denoise(x, sigma, labels):
        return (scale * torch.tanh(x.float().reshape(len(x), -1) @ w)).reshape(x.shape)
    return denoise


def spec(**kw):
    return PairSpec(**{**dict(num_pairs=64, image_shape=(1, 8, 8), shard_size=16, batch_size=16), **kw})


def snapshot(folder: Path) -> dict:
    """Every file under `folder` (provenance records and caches aside) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


@pytest.fixture
def project(tmp_path):
    """A project folder (the smoke profile) with a folder beside it that nothing may touch."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "dvc.yaml").write_text("")
    beside = tmp_path / "victim"
    beside.mkdir()
    (beside / "precious.txt").write_text("keep me")
    return root, beside


def write_params(root: Path, raw: dict) -> Path:
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root / "params.yaml"


def edited(path: str, value) -> dict:
    raw = json.loads(json.dumps(SMOKE))
    *parents, last = path.split(".")
    node = raw
    for k in parents:
        node = node.setdefault(k, {})
    node[last] = value
    return raw


# ------------------------------------------------------------------------------------------------
# params: names in paths, ranges
# ------------------------------------------------------------------------------------------------

def renamed_student(name: str) -> dict:
    raw = json.loads(json.dumps(SMOKE))
    raw["students"][name] = raw["students"].pop("get-p")
    return raw


@pytest.mark.parametrize("raw, message", [
    (renamed_student("../../../victim"), "students.../../../victim: '../../../victim' is not a valid name"),
    (renamed_student("a/b"), "students.a/b: 'a/b' is not a valid name"),
    (renamed_student(".hidden"), "is not a valid name"),
    (edited("profile", ".."), "profile: '..' is not a valid name"),
    (edited("profile", "/tmp/elsewhere"), "profile: '/tmp/elsewhere' is not a valid name"),
    (edited("profile", ""), "profile: '' is not a valid name"),
    (edited("distill.lr", -1e-3), "distill: lr must be > 0 and finite, got -0.001"),
    (edited("distill.lr", float("nan")), "distill: lr must be > 0 and finite, got nan"),
    (edited("distill.lr", float("inf")), "distill: lr must be > 0 and finite, got inf"),
    (edited("distill.betas", [0.9, "x"]), "distill: betas must be two numbers in [0, 1)"),
    (edited("distill.deq", {"f_tol": float("nan")}), "distill: f_tol must be >= 0, got nan"),
    (edited("sampler.num_steps", 2.5), "sampler.num_steps must be an integer"),
    (edited("distill.gamma", 1.5), "distill: gamma must be in [0, 1], got 1.5"),
    (edited("distill.warmup_steps", -1), "distill: warmup_steps must be >= 0, got -1"),
    (edited("distill.grad_clip", -1.0), "distill: grad_clip must be > 0 or null, got -1.0"),
    (edited("distill.num_workers", -2), "distill: num_workers must be >= 0, got -2"),
    (edited("distill.ema_decay", 1.5), "distill: ema_decay must be in [0, 1), got 1.5"),
    (edited("distill.weight_decay", -0.1), "distill: weight_decay must be >= 0"),
    (edited("distill.betas", [0.9, 1.0]), "distill: betas must be two numbers in [0, 1)"),
    (edited("distill.nproc", 0), "distill.nproc must be a positive integer (processes per run), got 0"),
    (edited("students.get-p.train", {"nproc": 0}), "students.get-p.train.nproc must be a positive integer"),
    (edited("students.get-p.train", {"lr": -1.0}), "students.get-p.train: lr must be > 0 and finite"),
    (edited("teacher.lr", -1e-3), "teacher: lr must be > 0 and finite, got -0.001"),
    (edited("teacher.warmup_steps", -5), "teacher: warmup_steps must be >= 0, got -5"),
    (edited("teacher.ema_halflife_images", 0), "teacher: ema_halflife_images must be > 0 and finite, got 0"),
    (edited("pairs.seed_start", -1), "pairs.seed_start must be >= 0, got -1"),
    (edited("evaluate.seed_start", -10), "evaluate.seed_start must be >= 0, got -10"),
    (edited("data.split_seed", -1), "data.split_seed must be >= 0, got -1"),
    (edited("sampler.rho", 0.0), "sampler: sampler rho and sigma_max must be finite and rho > 0, got rho=0.0"),
    (edited("teacher.trust_pickle", "yes"), "teacher.trust_pickle must be true/false, got 'yes'"),
])
def test_bad_params_are_refused_naming_the_key(project, raw, message):
    root, beside = project
    with pytest.raises(ParamsError) as e:
        load_params(write_params(root, raw))
    assert message in str(e.value)
    assert snapshot(beside) == {"precious.txt": b"keep me"}


@pytest.mark.parametrize("raw, message", [
    (edited("evaluate.num_samples", 300),
     "evaluate.num_samples 300 is more than data.held_out 200"),
    (edited("distill.nproc", 4),
     "students.get-p (with distill): nproc 4 ranks need a shard each, but pairs.num_pairs 300 in shards of "
     "pairs.shard_size 128 make 3"),
    (edited("distill.nproc", 3), "students.get-p (with distill): batch_size 32 is not divisible by nproc 3"),
    (edited("students.vit-p.train", {"num_pairs": 400}),
     "students.vit-p (with distill): num_pairs 400 is more than the pair set holds: pairs.num_pairs 300"),
    (edited("distill.batch_size", 512),
     "students.get-p (with distill): batch_size 512 takes 512 pairs per rank, more than pairs.num_pairs 300"),
])
def test_settings_that_another_setting_cannot_satisfy_are_refused_on_load_naming_both(project, raw, message):
    """Caught by `load_params`, which every stage runs first, instead of by a stage hours in."""
    root, beside = project
    with pytest.raises(ParamsError) as e:
        load_params(write_params(root, raw))
    assert message in str(e.value)
    assert not (root / "work").exists() and snapshot(beside) == {"precious.txt": b"keep me"}


def test_paths_the_pipeline_builds_stay_inside_the_project(project):
    root, beside = project
    p = load_params(write_params(root, SMOKE))
    assert p.work("students", "get-p") == root.resolve() / "work" / "smoke" / "students" / "get-p"
    p.profile = "../../victim"    # a name that bypassed load_params is still caught where paths are built
    with pytest.raises(ParamsError, match="profile: '../../victim' is not a valid name"):
        p.work("students")
    p.profile = "smoke"
    with pytest.raises(ParamsError, match="lies outside"):
        p.results("..", "..", "..", "victim")
    with pytest.raises(ParamsError, match="lies outside .*work/smoke"):   # nor into another profile's folder
        p.work("..", "digits")
    # deleting: only strictly inside the folder a stage owns; a link is removed, never followed
    with pytest.raises(ValueError, match=f"refusing to delete {beside}: it is not inside"):
        remove_owned(beside, p.work("students"))
    with pytest.raises(ValueError, match="refusing to delete"):
        remove_owned(p.work("students"), p.work("students"))
    p.work("students").mkdir(parents=True)
    link = p.work("students", "get-p")
    link.symlink_to(beside, target_is_directory=True)
    remove_owned(link, p.work("students"))
    assert not link.exists() and snapshot(beside) == {"precious.txt": b"keep me"}


# ------------------------------------------------------------------------------------------------
# pair sets: checksums, NaN, manifests, provenance
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def pair_set(tmp_path):
    root = tmp_path / "pairs"
    generate_pairs(toy_teacher(), root, spec(), TEACHER, SAMPLER)
    return root


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_corrupt_shard_is_named_and_never_trained_on(pair_set):
    PairDataset(pair_set)   # verified once (and remembered) ...
    shard = pair_set / "shards" / "shard-00002.npy"
    flip_a_byte(shard)      # ... but a changed file is checked again
    with pytest.raises(ValueError, match=f"{shard}: sha256 does not match the manifest"):
        PairDataset(pair_set)
    with pytest.raises(ValueError, match=f"{shard}: sha256 does not match"):   # nor reused by generation
        generate_pairs(toy_teacher(), pair_set, spec(), TEACHER, SAMPLER)


def test_a_truncated_shard_of_a_finished_set_is_named(pair_set):
    shard = pair_set / "shards" / "shard-00001.npy"
    shard.write_bytes(shard.read_bytes()[:200])
    problems = pair_set_problems(pair_set, spec(), TEACHER, SAMPLER)
    assert len(problems) == 1 and str(shard) in problems[0]
    with pytest.raises(ValueError, match="shard-00001.npy"):
        generate_pairs(toy_teacher(), pair_set, spec(), TEACHER, SAMPLER)


def test_shards_without_their_manifest_are_not_adopted(pair_set, tmp_path):
    (pair_set / "manifest.json").unlink()
    before = snapshot(pair_set)
    with pytest.raises(ValueError, match=r"holds \['shards'\] but no manifest.json"):
        generate_pairs(toy_teacher(), pair_set, spec(), TEACHER, SAMPLER)
    assert snapshot(pair_set) == before
    from getlib.teacher import TeacherConfig, train_teacher   # nor by the command line (torchrun's road)
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    train_teacher(x, None, TeacherConfig(channels=(8, 8, 8), emb_dim=16, batch_size=8, max_steps=1), tmp_path / "t.pt")
    with pytest.raises(ValueError, match=r"holds \['shards'\] but no manifest.json"):
        pairs.main(["--teacher", str(tmp_path / "t.pt"), "--out", str(pair_set), "--num_pairs", "64",
                    "--shard_size", "16", "--batch_size", "16", "--image_shape", "[1, 8, 8]", "--num_steps", "2"])
    assert snapshot(pair_set) == before


def test_a_shard_of_an_unfinished_set_is_checked_before_resuming(tmp_path, monkeypatch):
    root = tmp_path / "pairs"
    real = pairs._write_shard
    monkeypatch.setattr(pairs, "_write_shard", lambda path, rec: real(path, rec) if "00000" in path.name
                        else (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        generate_pairs(toy_teacher(), root, spec(), TEACHER, SAMPLER)
    monkeypatch.setattr(pairs, "_write_shard", real)
    shard = root / "shards" / "shard-00000.npy"
    records = np.load(shard)
    records["seed"][3] = 999
    np.save(shard, records)
    with pytest.raises(ValueError, match=f"{shard}: does not hold the 16 records of seeds 0..15"):
        generate_pairs(toy_teacher(), root, spec(), TEACHER, SAMPLER)


def test_a_set_made_by_other_code_is_not_resumed(pair_set, monkeypatch):
    before = snapshot(pair_set)
    monkeypatch.setattr(pairs, "code_fingerprint", lambda *modules: "0" * 64)
    with pytest.raises(ValueError, match="made by other code"):
        generate_pairs(toy_teacher(), pair_set, spec(), TEACHER, SAMPLER)
    (pair_set / ".provenance.json").unlink()
    assert "no provenance record" in pair_set_problems(pair_set, spec(), TEACHER, SAMPLER)[0]
    assert snapshot(pair_set) == before


@pytest.mark.parametrize("manifest, message", [
    ([1, 2, 3], "not a pair set manifest: expected a JSON object, got list"),
    ("text", "expected a JSON object, got str"),
    ({"format": "getlib-pairs/1"}, "'spec' must be an object"),
    ("shards outside", "shards[0].file must be shards/shard-NNNNN.npy, got '../../elsewhere.npy'"),
    ("no count", "shards[1].count None"),
])
def test_a_malformed_manifest_is_named(pair_set, manifest, message):
    path = pair_set / "manifest.json"
    good = json.loads(path.read_text())
    if manifest == "shards outside":
        manifest = {**good, "shards": [{**good["shards"][0], "file": "../../elsewhere.npy"}, *good["shards"][1:]]}
    elif manifest == "no count":
        manifest = {**good, "shards": [good["shards"][0], {**good["shards"][1], "count": None}]}
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError) as e:
        PairDataset(pair_set)
    assert str(path) in str(e.value) and message in str(e.value)


def test_a_teacher_that_gives_nan_writes_no_shard(tmp_path):
    root = tmp_path / "pairs"
    with pytest.raises(ValueError, match=r"shard-00000.npy \(seeds 0..15\): 16 pair\(s\) have non-finite image "
                                         r"values; the first is record 0 \(seed 0\)"):
        generate_pairs(toy_teacher(scale=float("nan")), root, spec(), TEACHER, SAMPLER)
    assert not list((root / "shards").glob("*.npy"))


def test_float16_overflow_is_refused_as_non_finite(tmp_path):
    with pytest.raises(ValueError, match="non-finite image values"):
        generate_pairs(toy_teacher(scale=1e6), tmp_path / "pairs", spec(), TEACHER, SAMPLER)


# released pairs -----------------------------------------------------------------------------------

def released(folder: Path, nan_in: str | None = None, stray: str | None = None) -> Path:
    for sub in ("latent", "image"):
        (folder / sub).mkdir(parents=True)
    for i, name in enumerate(("3.pkl", "7.pkl")):
        lat, img = torch.randn(4, 1, 8, 8), torch.rand(4, 1, 8, 8) * 2 - 1
        if nan_in == name:
            img[2, 0, 1, 1] = float("nan")
        torch.save(lat, folder / "latent" / name)
        torch.save(img.double(), folder / "image" / name)
    if stray:
        (folder / "image" / stray).write_text("notes")
    return folder


def test_released_labels_must_be_one_hot(tmp_path):
    src = released(tmp_path / "release")
    for name in ("3.pkl", "7.pkl"):
        labels = torch.zeros(4, 3)
        labels[:, 0] = 1
        labels[1] = torch.tensor([0.5, 0.5, 0.0]) if name == "7.pkl" else labels[1]
        torch.save([torch.load(src / "latent" / name), labels], src / "latent" / name)
    with pytest.raises(ValueError, match=r"latent/7.pkl: labels are not one-hot over 3 classes"):
        import_released_pairs(src, tmp_path / "imported", num_classes=3)
    torch.save({"not": "a tensor"}, src / "latent" / "3.pkl")
    with pytest.raises(ValueError, match=r"latent/3.pkl: holds dict, not a tensor of latents"):
        import_released_pairs(src, tmp_path / "imported")


def test_released_pairs_with_nan_are_refused_and_leave_nothing(tmp_path):
    src = released(tmp_path / "release", nan_in="7.pkl")
    with pytest.raises(ValueError, match=r"latent/7.pkl / .*image/7.pkl: 1 pair\(s\) have non-finite image values; "
                                         r"the first is record 2:"):
        import_released_pairs(src, tmp_path / "imported", shard_size=3)
    assert not (tmp_path / "imported").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["release"]   # no partial folder either


def test_a_stray_file_among_released_pairs_is_named(tmp_path):
    src = released(tmp_path / "release", stray="README.txt")
    with pytest.raises(ValueError, match=r"image: released pair files are named <last seed>.pkl; found \['README.txt'\]"):
        import_released_pairs(src, tmp_path / "imported")


def test_an_import_is_complete_or_absent(tmp_path):
    src = released(tmp_path / "release")
    manifest = import_released_pairs(src, tmp_path / "imported", shard_size=3)
    assert manifest["num_pairs"] == 8 and len(PairDataset(tmp_path / "imported")) == 8
    with pytest.raises(ValueError, match="imported: not empty"):
        import_released_pairs(src, tmp_path / "imported")


# ------------------------------------------------------------------------------------------------
# training runs: provenance decides resume; checkpoints and students are named when unreadable
# ------------------------------------------------------------------------------------------------

def run_cfg(pairs_root: Path, out: Path, **kw) -> TrainConfig:
    base = dict(pairs=str(pairs_root), out=str(out), model="ViT-P/2", batch_size=16, max_steps=4, lr=1e-3,
                log_every=1, ckpt_every=2, sample_every=4, num_samples=4, progress=False)
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def finished_run(pair_set, tmp_path):
    cfg = run_cfg(pair_set, tmp_path / "run")
    train(cfg)
    return cfg


def test_a_finished_run_with_the_same_inputs_is_reused(finished_run):
    out = Path(finished_run.out)
    assert resume_problems(finished_run) == []
    before = snapshot(out / "checkpoints")
    assert train(finished_run)["steps"] == 4   # nothing to train
    assert snapshot(out / "checkpoints") == before


def test_a_run_whose_pair_set_changed_is_not_resumed(finished_run):
    out = Path(finished_run.out)
    before = snapshot(out)
    shutil.rmtree(finished_run.pairs)   # the same folder, pairs from another teacher
    generate_pairs(toy_teacher(scale=0.5), finished_run.pairs, spec(), {"kind": "test", "name": "other"}, SAMPLER)
    with pytest.raises(ValueError, match=f"{out}: cannot resume this run: its pair set changed"):
        train(finished_run)
    assert snapshot(out) == before


def test_a_run_made_by_other_code_is_not_resumed(finished_run, monkeypatch):
    monkeypatch.setattr(runs_module, "code_fingerprint", lambda *modules: "0" * 64)
    assert resume_problems(finished_run) == ["the training code changed (getlib.train or a module it imports)"]


def test_a_tampered_checkpoint_is_not_resumed(finished_run):
    ckpt = Path(finished_run.out) / "checkpoints" / "latest.pt"
    flip_a_byte(ckpt)
    assert resume_problems(finished_run) == [f"{ckpt}: sha256 does not match the one recorded when it was written"]


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint", "not a readable training checkpoint"),
    ("student", "not a training checkpoint written by getlib.train (lacks ["),
])
def test_a_checkpoint_that_is_not_one_is_named(finished_run, content, message):
    from getlib.io import file_sha256
    from getlib.provenance import read_record, write_record

    out = Path(finished_run.out)
    ckpt = out / "checkpoints" / "latest.pt"
    if content == "student":
        shutil.copyfile(out / "student.pt", ckpt)
    else:
        ckpt.write_bytes(content)
    write_record(out, {**read_record(out), "checkpoint_sha256": file_sha256(ckpt)})   # even with its record
    with pytest.raises(ValueError) as e:
        train(finished_run)
    assert f"{ckpt}: {message}" in str(e.value)


def test_other_settings_are_named_and_a_half_made_run_is_refused(finished_run, tmp_path):
    settings = {**vars(finished_run), "lr": 5e-4}
    assert resume_problems(TrainConfig(**settings)) == ["setting lr: checkpoint 0.001, now 0.0005"]
    half = tmp_path / "half"
    half.mkdir()
    (half / "metrics.csv").write_text("step,loss\n1,0.5\n")
    with pytest.raises(ValueError, match=f"{half}: cannot resume this run: {half} holds files but no checkpoint"):
        train(run_cfg(finished_run.pairs, half))


def test_a_kill_between_checkpoint_and_record_keeps_the_run_resumable(finished_run, monkeypatch):
    """The checkpoint's sha256 is announced in the record before the rename: a kill right after the
    rename (before the record names it as current) leaves a run that still resumes."""
    from getlib.provenance import read_record, write_record
    out = Path(finished_run.out)
    record = read_record(out)
    write_record(out, {**record, "checkpoint_sha256": "0" * 64, "checkpoint_sha256_next": record["checkpoint_sha256"]})
    assert resume_problems(finished_run) == []


def test_settings_survive_the_command_line_that_torchrun_gets(tmp_path):
    cfg = TrainConfig(pairs=str(tmp_path / "a b"), out="123", deq={"b_tol": 1e-6, "f_max_iter": 5}, lr=2e-3,
                      betas=(0.9, 0.95), grad_clip=None, ema_halflife_images=5e5)
    assert train_module.parse_args(train_module.cli_args(cfg)) == cfg


def test_an_unreadable_student_is_named(tmp_path):
    bad = tmp_path / "student.pt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=f"{bad}: not a student saved by getlib.train"):
        load_student(bad)
    torch.save({"something": 1}, bad)
    with pytest.raises(ValueError, match=f"{bad}: not a student saved by getlib.train \\(KeyError"):
        load_student(bad)


@pytest.mark.parametrize("torn", ["1", "2,0.4", "\xff\xfe"])
def test_a_torn_log_line_is_repaired_on_resume(pair_set, tmp_path, torn):
    """A kill mid-append leaves part of a row (here one that reads as a step the checkpoint covers,
    or undecodable bytes); the resumed run drops it instead of keeping a row of empty fields."""
    cfg = run_cfg(pair_set, tmp_path / "run", max_steps=2)
    train(cfg)
    log = tmp_path / "run" / "metrics.csv"
    whole = log.read_text()
    log.write_bytes(whole.encode() + torn.encode("latin-1"))
    train(TrainConfig(**{**vars(cfg), "max_steps": 4}))
    rows = [r.split(",") for r in log.read_text().splitlines()]
    assert rows[0] == whole.splitlines()[0].split(",") and [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert all(len(r) == len(rows[0]) and all(r) for r in rows)


def test_a_torn_header_starts_the_log_again(pair_set, tmp_path):
    cfg = run_cfg(pair_set, tmp_path / "run", max_steps=2)
    train(cfg)
    log = tmp_path / "run" / "samples.csv"
    log.write_text("st")
    train(TrainConfig(**{**vars(cfg), "max_steps": 4}))
    assert log.read_text().splitlines()[0].startswith("step,") and log.read_text().count("\n") == 2   # step 4


# ------------------------------------------------------------------------------------------------
# stages: stale folders are replaced inside the stage's own folder, with the reason
# ------------------------------------------------------------------------------------------------

def one_vit_profile() -> dict:
    """The smoke profile cut to one ViT student trained 4 steps (checkpoints at 2 and 4)."""
    raw = json.loads(json.dumps(SMOKE))
    raw["students"] = {"vit-p": {"model": "ViT-P/2", "condition": "uncond"}}
    raw["conditions"] = ["uncond"]
    raw["distill"].update(max_steps=4, ckpt_every=2, snapshot_every=None)
    return raw


def test_the_distill_stage_replaces_a_stale_run_and_keeps_a_good_one(project, capsys):
    root, beside = project
    raw = one_vit_profile()
    p = load_params(write_params(root, raw))
    generate_pairs(toy_teacher(), p.work("pairs", "uncond"), spec(), TEACHER, SAMPLER)
    first = distill(p, "vit-p")
    kept = snapshot(p.work("students", "vit-p", "checkpoints"))
    assert distill(p, "vit-p")["steps"] == first["steps"] == 4     # reused as it is
    assert snapshot(p.work("students", "vit-p", "checkpoints")) == kept
    assert "starting anew" not in capsys.readouterr().err
    remove_owned(p.work("pairs", "uncond"), p.work("pairs"))              # new pairs from another teacher
    generate_pairs(toy_teacher(scale=0.5), p.work("pairs", "uncond"), spec(), {"kind": "other"}, SAMPLER)
    distill(p, "vit-p")
    assert "starting anew: its pair set changed" in capsys.readouterr().err
    assert snapshot(p.work("students", "vit-p", "checkpoints")) != kept
    assert snapshot(beside) == {"precious.txt": b"keep me"}
    logged = (p.results("train", "vit-p.csv")).read_text().splitlines()   # the log; its wall-clock columns apart
    assert logged[0].endswith(",grad_norm") and len(logged) == 3   # steps 2, 4
    assert p.results("timing", "vit-p.csv").read_text().splitlines()[0] == "step,images_per_s,seconds"


def test_a_profile_reuses_another_profiles_identical_run_and_only_that(project, capsys):
    """`reuse: <profile>` copies that profile's finished run when it is exactly the run this one would
    make (same pairs, code and file-shaping settings); otherwise this profile trains its own. The
    other profile's folder is only read."""
    root, _ = project
    raw = one_vit_profile()
    a = load_params(write_params(root, raw))
    generate_pairs(toy_teacher(), a.work("pairs", "uncond"), spec(), TEACHER, SAMPLER)
    distill(a, "vit-p")
    made = snapshot(a.work("students", "vit-p"))
    for profile, change, reused in (("same", {}, True), ("other-lr", {"lr": 1e-4}, False),
                                    ("other-snapshots", {"snapshot_every": 2}, False)):
        raw_b = {**json.loads(json.dumps(raw)), "profile": profile, "reuse": "smoke"}
        raw_b["distill"].update(change)
        b = load_params(write_params(root, raw_b))
        generate_pairs(toy_teacher(), b.work("pairs", "uncond"), spec(), TEACHER, SAMPLER)
        capsys.readouterr()
        distill(b, "vit-p")
        out = capsys.readouterr().err
        assert ("copied the identical finished run" in out) == reused, (profile, out)
        assert (snapshot(b.work("students", "vit-p")) == made) == (profile == "same"), profile
        assert snapshot(a.work("students", "vit-p")) == made            # the source is untouched
    summary = a.work("students", "vit-p", "run.json")                  # a run made on another device type
    summary.write_text(summary.read_text().replace('"device": "cpu"', '"device": "cuda:0"'))
    b = load_params(write_params(root, {**json.loads(json.dumps(raw)), "profile": "other-device", "reuse": "smoke"}))
    generate_pairs(toy_teacher(), b.work("pairs", "uncond"), spec(), TEACHER, SAMPLER)
    capsys.readouterr()
    distill(b, "vit-p")
    assert "ran on cuda, this run would run on cpu" in capsys.readouterr().err
    with pytest.raises(ParamsError, match="reuse names this profile"):
        load_params(write_params(root, {**raw, "reuse": "smoke"}))
    with pytest.raises(ParamsError, match=r"reuse: '\.\./x' is not a valid name"):
        load_params(write_params(root, {**raw, "reuse": "../x"}))


@pytest.mark.parametrize("sample_every, continued", [(2, True), (3, False)])
def test_a_longer_student_continues_the_identical_shorter_run_bit_for_bit(project, capsys, sample_every, continued):
    """A student that differs from another only in a larger max_steps starts from that student's
    finished run (left untouched) and ends with the files a run trained from scratch ends with. Not
    when the shorter run ended between sample steps (it samples at its last step: an extra file),
    nor from a run that differs in anything else."""
    root, _ = project
    raw = one_vit_profile()
    raw["distill"].update(sample_every=sample_every, log_every=1)
    raw["students"].update({"vit-p-long": {"model": "ViT-P/2", "condition": "uncond", "train": {"max_steps": 6}},
                            "vit-p-other-lr": {"model": "ViT-P/2", "condition": "uncond",
                                               "train": {"max_steps": 6, "lr": 1e-4}}})
    p = load_params(write_params(root, raw))
    generate_pairs(toy_teacher(), p.work("pairs", "uncond"), spec(), TEACHER, SAMPLER)
    capsys.readouterr()
    distill(p, "vit-p-long")   # its twin has not run: from scratch, saying why
    assert "training from scratch, no shorter run to continue: vit-p" in capsys.readouterr().err
    remove_owned(p.work("students", "vit-p-long"), p.work("students"))
    distill(p, "vit-p")
    short = snapshot(p.work("students", "vit-p"))
    capsys.readouterr()
    assert distill(p, "vit-p-long")["steps"] == 6
    out = capsys.readouterr().err
    assert ("continuing vit-p's finished 4-step run to 6 steps" in out) == continued, out
    assert ("ends at step 4, between the steps that log, sample or snapshot" in out) != continued, out
    assert snapshot(p.work("students", "vit-p")) == short
    train(dataclasses.replace(p.train_config("vit-p-long"), out=str(root / "scratch")))
    files = lambda folder: {k: v for k, v in snapshot(folder).items() if k != "timing.csv"}  # noqa: E731
    assert files(p.work("students", "vit-p-long")).keys() == files(root / "scratch").keys()
    for name, content in files(root / "scratch").items():
        if name.endswith(".pt"):   # (pickled zip archives: compare the tensors)
            a, b = (torch.load(d / name, weights_only=False) for d in (p.work("students", "vit-p-long"), root / "scratch"))
            assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in b["ema"]), name
        else:
            assert (p.work("students", "vit-p-long") / name).read_bytes() == content, name
    distill(p, "vit-p-other-lr")
    assert "continuing" not in capsys.readouterr().err


def test_a_finished_run_is_not_reentered_so_its_results_stay_byte_identical(project):
    """DVC re-runs a distill stage when its code changes; a finished run is then kept as it is: no
    file of it rewritten, and results/<profile>/timing/<student>.json keeps the run's own seconds."""
    root, _ = project
    p = load_params(write_params(root, one_vit_profile()))
    generate_pairs(toy_teacher(), p.work("pairs", "uncond"), spec(), TEACHER, SAMPLER)
    distill(p, "vit-p")
    files = lambda: {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in sorted(p.work("students").rglob("*"))  # noqa: E731
                     if f.is_file()}
    published = lambda: {f: f.read_bytes() for d in ("train", "timing") for f in p.results(d).iterdir()}  # noqa: E731
    made, results = files(), published()
    assert distill(p, "vit-p")["steps"] == 4
    assert files() == made and published() == results


def test_a_longer_student_trains_from_scratch_beside_a_locked_or_unreadable_twin(project, capsys):
    """A shorter twin whose trainer holds its lock, or whose files cannot be read, is not copied: the
    longer student trains from scratch, says why, and leaves the twin as it found it."""
    root, _ = project
    raw = one_vit_profile()
    raw["distill"].update(sample_every=2, log_every=1)
    raw["students"]["vit-p-long"] = {"model": "ViT-P/2", "condition": "uncond", "train": {"max_steps": 6}}
    p = load_params(write_params(root, raw))
    generate_pairs(toy_teacher(), p.work("pairs", "uncond"), spec(), TEACHER, SAMPLER)
    distill(p, "vit-p")
    twin, lock = p.work("students", "vit-p"), p.work("students", ".vit-p.lock")
    lock.write_text(str(os.getpid()))   # a live process training the twin
    made = snapshot(twin)
    capsys.readouterr()
    assert distill(p, "vit-p-long")["steps"] == 6
    err = capsys.readouterr().err
    assert f"training from scratch, no shorter run to continue: vit-p: {lock}: process {os.getpid()} is training" in err, err
    assert lock.read_text() == str(os.getpid()) and snapshot(twin) == made
    lock.unlink()
    remove_owned(p.work("students", "vit-p-long"), p.work("students"))
    (twin / "run.json").write_text("{")   # caught between writing its files
    made = snapshot(twin)
    assert distill(p, "vit-p-long")["steps"] == 6
    err = capsys.readouterr().err
    assert f"training from scratch, no shorter run to continue: vit-p: {twin}: unreadable" in err, err
    assert snapshot(twin) == made and not lock.exists()


def test_the_teacher_file_follows_the_source_not_the_suffix(project):
    root, _ = project
    p = load_params(write_params(root, SMOKE))
    folder = p.work("teacher", "uncond")
    folder.mkdir(parents=True)
    (folder / "evil.pkl").write_bytes(pickle.dumps({"ema": None}))
    with pytest.raises(FileNotFoundError, match="no teacher at .*teacher/uncond/teacher.pt"):
        p.teacher_file("uncond")
    (folder / "teacher.pt").write_bytes(b"")
    assert p.teacher_file("uncond") == folder / "teacher.pt"


@pytest.mark.parametrize("kw, message", [
    ({"num_classes": 1}, "pairs num_classes must be an integer >= 2 or None, got 1"),
    ({"num_classes": -3}, "pairs num_classes must be an integer >= 2 or None, got -3"),
    ({"seed_start": -1}, "pairs seed_start must be >= 0, got -1"),
    ({"image_shape": (1, 8)}, "pairs image_shape must be (C, H, W) of positive sizes"),
])
def test_a_bad_pair_spec_is_refused_naming_the_setting(kw, message):
    """The library's and the command line's road (PairSpec), not only params.yaml's."""
    with pytest.raises(ValueError) as e:
        spec(**kw)
    assert message in str(e.value)
