"""The distillation loop: it learns, resumes bit for bit, matches across DDP ranks, refuses bad settings."""
import csv
import math
import os
import subprocess
import sys

import pytest
import torch

from getlib.data import digits
from getlib.pairs import PairSpec, generate_pairs
from getlib.models import load_student
from getlib.train import TrainConfig, TrainingDiverged, main, train


@pytest.fixture(scope="module")
def pair_sets(tmp_path_factory):
    """Small digit-shaped pair sets from real digits, (unconditional, class-conditional)."""
    root = tmp_path_factory.mktemp("pairs")
    x, _ = digits()
    # targets: real digits picked by seed, so that the pairs are learnable but not trivial
    def digit_teacher(xt, sigma, labels):
        idx = (xt.flatten(1)[:, :4].abs().sum(1) * 1000).long() % len(x)
        return x[idx].to(xt.dtype) if float(sigma) < 1 else xt * 0
    sets = {}
    for name, classes in (("uncond", None), ("cond", 10)):
        spec = PairSpec(num_pairs=64, image_shape=(1, 8, 8), num_classes=classes, shard_size=16, batch_size=16)
        generate_pairs(digit_teacher, root / name, spec, {"kind": "test"}, _sampler())
        sets[name] = root / name
    return sets


def _sampler():
    from getlib.edm import SamplerConfig
    return SamplerConfig(num_steps=2)


def cfg(pairs, out, **kw):
    base = dict(pairs=str(pairs), out=str(out), model="GET-P/2", batch_size=16, max_steps=8, lr=2e-3,
                log_every=1, ckpt_every=4, sample_every=8, num_samples=4, progress=False,
                ema_halflife_images=200, ema_rampup_ratio=0.5, seed=3)
    return TrainConfig(**{**base, **kw})


def losses(out):
    with open(out / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("model", ["GET-P/2", "ViT-P/2"])
@pytest.mark.parametrize("cond", [False, True])
def test_a_few_steps_reduce_the_loss(pair_sets, tmp_path, model, cond):
    summary = train(cfg(pair_sets["cond" if cond else "uncond"], tmp_path, model=model, cond=cond, max_steps=30,
                        deq={"f_max_iter": 3, "grad_steps": 2} if model.startswith("GET") else {}))
    curve = losses(tmp_path)
    assert len(curve) == 30 and sum(curve[-5:]) < 0.85 * sum(curve[:5])
    assert summary["steps"] == 30 and summary["recipe"]["kind"] == ("DEQ" if model.startswith("GET") else "single output")
    student = load_student(tmp_path / "student.pt")
    assert student.cond == cond and (tmp_path / "samples" / "step-0000030.png").exists()
    with open(tmp_path / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    if model.startswith("GET"):  # 2 supervised states: the no-grad solve plus a 2-step phantom gradient
        assert {"loss_state1", "loss_state2"} <= set(row) and "loss_state3" not in row


def test_the_paper_recipe_supervises_six_states(pair_sets, tmp_path):
    summary = train(cfg(pair_sets["uncond"], tmp_path, max_steps=2))
    assert summary["recipe"] == {"kind": "DEQ", "name": "paper", "loss": "l1", "gamma": 0.8, "no_grad_iterations": 0,
                                 "grad": "phantom", "grad_steps": 6, "tau": 1.0, "sup_gap": 1,
                                 "memory_efficient": False}
    with open(tmp_path / "metrics.csv") as f:
        assert "loss_state6" in next(csv.DictReader(f))


def weights(path):
    blob = torch.load(path, weights_only=True)
    return {**{f"model.{k}": v for k, v in blob["model"].items()}, **{f"ema.{k}": v for k, v in blob["ema"].items()}}


def test_a_pairs_z0_depends_on_its_pair_and_epoch_only(pair_sets):
    """The equilibrium state z0 drawn for a pair is the same whatever batch, position or rank it
    lands in; another epoch (or run seed) draws another one."""
    from getlib.pairs import PairDataset
    from getlib.batches import TrainingItems
    shape = (16, 64)
    whole = TrainingItems(PairDataset(pair_sets["uncond"]), shape, seed=3)
    z_alone = whole.__getitems__([(17, 0)])[3][0]
    latents, images, labels, z0 = whole.__getitems__([(40, 0), (17, 0), (17, 1)])
    assert torch.equal(z0[1], z_alone) and not torch.equal(z0[2], z_alone)
    assert torch.equal(whole[(17, 0)][3], z_alone)
    rank1 = TrainingItems(PairDataset(pair_sets["uncond"], rank=1, world_size=2), shape, seed=3)
    assert rank1.pairs.global_indices([1]).tolist() == [17]   # shards of 16: rank 1 holds pairs 16-31, 48-63
    assert torch.equal(rank1.__getitems__([(1, 0)])[3][0], z_alone)
    assert not torch.equal(TrainingItems(whole.pairs, shape, seed=4).__getitems__([(17, 0)])[3][0], z_alone)
    vit = TrainingItems(whole.pairs, None, seed=3).__getitems__([(17, 0), (3, 0)])
    assert vit[3].shape == (2, 0) and torch.equal(vit[0][0], latents[1]) and torch.equal(vit[1][0], images[1])


def test_loader_workers_do_not_change_the_run(pair_sets, tmp_path):
    train(cfg(pair_sets["uncond"], tmp_path / "inline", max_steps=5))
    train(cfg(pair_sets["uncond"], tmp_path / "worker", max_steps=5, num_workers=1))
    a = weights(tmp_path / "inline" / "checkpoints" / "latest.pt")
    b = weights(tmp_path / "worker" / "checkpoints" / "latest.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_kill_and_resume_equals_uninterrupted_bit_for_bit(pair_sets, tmp_path, monkeypatch):
    # 64 pairs, batch 16: 4 steps per epoch, so 10 steps cross two epoch boundaries
    train(cfg(pair_sets["uncond"], tmp_path / "straight", max_steps=10))
    import getlib.train as gt
    real = gt._check_divergence
    calls = []

    def killed_at_step_7(value, recent, step, *a):
        calls.append(step)
        if step == 7:
            raise KeyboardInterrupt  # after the step-4 checkpoint, before the step-8 one
        return real(value, recent, step, *a)

    monkeypatch.setattr(gt, "_check_divergence", killed_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(pair_sets["uncond"], tmp_path / "resumed", max_steps=10))
    monkeypatch.setattr(gt, "_check_divergence", real)
    assert torch.load(tmp_path / "resumed" / "checkpoints" / "latest.pt", weights_only=True)["step"] == 4
    train(cfg(pair_sets["uncond"], tmp_path / "resumed", max_steps=10))
    a = weights(tmp_path / "straight" / "checkpoints" / "latest.pt")
    b = weights(tmp_path / "resumed" / "checkpoints" / "latest.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")  # no duplicated or missing rows
    # and the same bytes in every file DVC hashes (the checkpoint too: pickle's memo must not see
    # that the resumed optimizer's state keys were read back from a file)
    hashed = lambda run: {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*"))  # noqa: E731
                          if p.is_file() and p.name not in (".provenance.json", "timing.csv")}
    straight, resumed = hashed(tmp_path / "straight"), hashed(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    assert [k for k in straight if straight[k] != resumed[k]] == []


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(pair_sets, tmp_path):
    """Same global batch: every step sees all 64 pairs, split 32 + 32 over two gloo ranks."""
    common = ["--pairs", str(pair_sets["uncond"]), "--model", "GET-P/2", "--batch_size", "64", "--max_steps", "3",
              "--lr", "2e-3", "--progress", "false", "--ckpt_every", "3", "--sample_every", "3", "--num_samples", "4",
              "--deq", "{f_max_iter: 2, grad_steps: 2}"]
    main([*common, "--out", str(tmp_path / "one")])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "getlib.train", *common, "--out", str(tmp_path / "two")],
                   check=True, env=env, capture_output=True, timeout=600)
    a = weights(tmp_path / "one" / "checkpoints" / "latest.pt")
    b = weights(tmp_path / "two" / "checkpoints" / "latest.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), rel=1e-5)


@pytest.mark.parametrize("bad, error, match", [
    (dict(model="GET-Z/2"), ValueError, "unknown model 'GET-Z/2'"),
    (dict(batch_size=16, max_steps=1), None, None),  # the good case, for contrast
    (dict(loss="huber"), ValueError, "loss must be one of"),
    (dict(lr="fast"), ValueError, "training setting lr must be a number, got 'fast'"),
    (dict(deq={"grad_stepz": 2}), ValueError, r"unknown DEQ setting\(s\) \['grad_stepz'\]"),
    (dict(model="ViT-P/2", deq={"grad_steps": 2}), ValueError, "deq settings apply to GET models"),
    (dict(cond=True), ValueError, "cond=True needs class-conditional pairs"),
])
def test_bad_settings_fail_before_training(pair_sets, tmp_path, bad, error, match):
    if error is None:
        train(cfg(pair_sets["uncond"], tmp_path, **bad))
        return
    with pytest.raises(error, match=match):
        train(cfg(pair_sets["uncond"], tmp_path, **bad))
    assert not (tmp_path / "metrics.csv").exists()


def test_missing_pairs_and_world_size_are_named(tmp_path, pair_sets, monkeypatch):
    with pytest.raises(FileNotFoundError, match="pairs: no pair set at"):
        train(cfg(tmp_path / "nowhere", tmp_path / "run"))
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="batch_size 16 is not divisible by the world size 3"):
        train(cfg(pair_sets["uncond"], tmp_path / "run"))
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_resume_with_other_settings_is_refused(pair_sets, tmp_path, monkeypatch):
    train(cfg(pair_sets["uncond"], tmp_path, max_steps=4))
    monkeypatch.chdir(tmp_path.parent)
    train(cfg(pair_sets["uncond"], tmp_path.name, max_steps=6))  # longer, same folder by another path: allowed
    with pytest.raises(ValueError, match="lr: checkpoint 0.002, now 0.001"):
        train(cfg(pair_sets["uncond"], tmp_path, max_steps=8, lr=1e-3))
    monkeypatch.setenv("WORLD_SIZE", "2")  # (not initialised: the check comes first)
    with pytest.raises(ValueError, match="world_size: checkpoint 1, now 2"):
        train(cfg(pair_sets["uncond"], tmp_path, max_steps=8))


def test_exploding_loss_stops_with_the_last_good_checkpoint(pair_sets, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"at step \d+; the last good checkpoint is .*latest.pt"):
        train(cfg(pair_sets["uncond"], tmp_path, max_steps=200, lr=1e6, ckpt_every=2, explode_factor=3.0))
    saved = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_cli_help_documents_every_setting(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in ("--pairs", "--out", "--model", "--deq", "--ema_halflife_images", "--time_budget_s", "torchrun"):
        assert name in text


def test_learning_rate_schedules():
    from getlib.runs import resumable_changes
    from getlib.train import learning_rate
    const = TrainConfig(pairs="-", out="-", lr=1e-3, warmup_steps=10, max_steps=110)
    assert [learning_rate(const, s) for s in (0, 4, 9, 50, 109)] == pytest.approx([1e-4, 5e-4, 1e-3, 1e-3, 1e-3])
    cos = TrainConfig(pairs="-", out="-", lr=1e-3, warmup_steps=10, max_steps=110, lr_schedule="cosine")
    assert learning_rate(cos, 9) == pytest.approx(1e-3)
    assert learning_rate(cos, 60) == pytest.approx(0.5e-3)          # half way through the decay
    assert learning_rate(cos, 109) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert "max_steps" in resumable_changes(const) and "max_steps" not in resumable_changes(cos)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(pairs="-", out="-", lr_schedule="step")


def test_grad_norm_is_logged_on_every_row_with_or_without_clipping(pair_sets, tmp_path):
    """The total gradient norm (the DEQ-stability signal) is logged whether or not clipping is on;
    a clip that never bites leaves the run unchanged and reports the same norm."""
    def norms(out):
        with open(out / "metrics.csv") as f:
            return [float(r["grad_norm"]) for r in csv.DictReader(f)]
    train(cfg(pair_sets["uncond"], tmp_path / "plain", max_steps=3))
    train(cfg(pair_sets["uncond"], tmp_path / "clipped", max_steps=3, grad_clip=1e9))
    plain, clipped = norms(tmp_path / "plain"), norms(tmp_path / "clipped")
    assert len(plain) == 3 and all(math.isfinite(n) and n > 0 for n in plain)
    assert plain == pytest.approx(clipped, rel=1e-5)


def test_num_pairs_trains_on_the_first_pairs_exactly(pair_sets, tmp_path):
    """num_pairs = 32 of a 64-pair set is the same run as on a set holding only those 32 pairs."""
    x, _ = digits()

    def digit_teacher(xt, sigma, labels):   # the fixture's teacher: pairs are a function of their seed
        idx = (xt.flatten(1)[:, :4].abs().sum(1) * 1000).long() % len(x)
        return x[idx].to(xt.dtype) if float(sigma) < 1 else xt * 0
    small = tmp_path / "pairs-32"
    generate_pairs(digit_teacher, small, PairSpec(num_pairs=32, image_shape=(1, 8, 8), shard_size=16, batch_size=16),
                   {"kind": "test"}, _sampler())
    train(cfg(pair_sets["uncond"], tmp_path / "subset", num_pairs=32, max_steps=6))
    train(cfg(small, tmp_path / "whole", max_steps=6))
    assert losses(tmp_path / "subset") == losses(tmp_path / "whole")
    train(cfg(pair_sets["uncond"], tmp_path / "all", max_steps=6))
    assert losses(tmp_path / "all") != losses(tmp_path / "whole")
    with pytest.raises(ValueError, match="num_pairs 128"):
        train(cfg(pair_sets["uncond"], tmp_path / "too-many", num_pairs=128))


def test_shuffled_targets_pair_each_noise_with_another_image(pair_sets):
    from getlib.pairs import PairDataset
    from getlib.batches import TrainingItems
    pairs = PairDataset(pair_sets["uncond"])
    targets = list(range(1, 64)) + [0]
    latents, images, _, _ = TrainingItems(pairs, None, 0, targets).__getitems__([(0, 0), (5, 0)])
    plain = TrainingItems(pairs, None, 0).__getitems__([(0, 0), (5, 0), (1, 0), (6, 0)])
    assert torch.equal(latents, plain[0][:2]) and torch.equal(images, plain[1][2:])


def test_a_run_on_shuffled_targets_trains_and_differs(pair_sets, tmp_path):
    train(cfg(pair_sets["uncond"], tmp_path / "plain", max_steps=3))
    summary = train(cfg(pair_sets["uncond"], tmp_path / "shuffled", max_steps=3, shuffle_targets=True))
    assert summary["steps"] == 3 and losses(tmp_path / "shuffled") != losses(tmp_path / "plain")
    assert losses(tmp_path / "shuffled")[0] != losses(tmp_path / "plain")[0]   # other images from the first step


def test_bf16_precision_autocasts_on_the_cpu_too(pair_sets, tmp_path):
    """The training loop's autocast path (bf16 on CUDA by default) run on the CPU: close to float32."""
    train(cfg(pair_sets["uncond"], tmp_path / "fp32", max_steps=3, precision="fp32"))
    train(cfg(pair_sets["uncond"], tmp_path / "bf16", max_steps=3, precision="bf16"))
    fp32, bf16 = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert fp32 != bf16 and all(abs(a - b) < 2e-2 * a for a, b in zip(fp32, bf16))


@pytest.mark.parametrize("recipe, states", [("paper", 6), ("bptt-last", 1), ("truncated", 1)])
def test_named_recipes_supervise_their_states(pair_sets, tmp_path, recipe, states):
    summary = train(cfg(pair_sets["uncond"], tmp_path, max_steps=2, deq={"recipe": recipe}))
    with open(tmp_path / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert summary["recipe"]["name"] == recipe
    assert sum(1 for k in row if k.startswith("loss_state")) == states
