"""torch.compile (inductor, on the CPU) in the training loop (`compile: true`): the compiled run
follows the eager one within the stated tolerance, repeats itself bit for bit, and a killed compiled
run resumes to the uninterrupted one's bytes. A toy GET (16 wide, one block of each kind) keeps the
cold compile short; it is the model of `benchmarks/train_compile.py --dry-run`, so the two share
inductor's cached kernels."""
import csv
import importlib.util
import subprocess
import sys
from functools import partial

import pytest
import torch

import getlib.train as gt
from conftest import ROOT
from getlib import models, settings
from getlib.edm import SamplerConfig
from getlib.pairs import PairSpec, generate_pairs
from getlib.train import TrainConfig, train

_spec = importlib.util.spec_from_file_location("train_compile", ROOT / "benchmarks" / "train_compile.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture
def toy(monkeypatch):
    """The toy GET in both registries, and one thread (the benchmark's: the kernels are the same)."""
    monkeypatch.setitem(settings.GET_CONFIGS, bench.TOY_NAME, bench.TOY_CONFIG)
    monkeypatch.setitem(models.GET_models, bench.TOY_NAME, partial(models.GET, name=bench.TOY_NAME, **bench.TOY_CONFIG))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield bench.TOY_NAME
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs") / "pairs"
    generate_pairs(lambda x, s, c: torch.tanh(x.float()), root, PairSpec(num_pairs=64, image_shape=(1, 8, 8), shard_size=64),
                   {"kind": "synthetic"}, SamplerConfig(num_steps=1))
    return root


def cfg(pairs, out, **kw):
    base = dict(pairs=str(pairs), out=str(out), model=bench.TOY_NAME, deq={"recipe": "truncated"}, batch_size=16,
                max_steps=10, log_every=1, ckpt_every=4, sample_every=10 ** 6, num_samples=4, progress=False,
                compile=True, seed=0, **bench.TRAINING)
    return TrainConfig(**{**base, **kw})


def losses(out):
    with open(out / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def weights(out):
    ckpt = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    return {f"{part}.{k}": v for part in ("model", "ema") for k, v in ckpt[part].items()}


def test_compiled_training_follows_eager(toy, pairs, tmp_path):
    """Compiled within the benchmark's tolerance of eager: 1e-5 relative at step 1 (same weights
    and batch, other kernels), 1e-3 over the run; the weights after 10 steps close too."""
    train(cfg(pairs, tmp_path / "eager", compile=False))
    train(cfg(pairs, tmp_path / "compiled"))
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 10 and eager[-1] < eager[0]
    assert bench.max_rel(compiled[:1], eager[:1]) <= bench.FIRST_LOSS_TOLERANCE
    assert bench.max_rel(compiled, eager) <= bench.LOSS_TOLERANCE
    a, b = weights(tmp_path / "eager"), weights(tmp_path / "compiled")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)


def test_compiled_runs_repeat_and_resume_bit_for_bit(toy, pairs, tmp_path):
    """Two compiled runs write the same bytes; one killed at step 7 (after the step-4 checkpoint)
    and resumed ends with the uninterrupted run's weights, logs and student.pt, byte for byte."""
    train(cfg(pairs, tmp_path / "straight"))
    train(cfg(pairs, tmp_path / "again"))
    for name in ("student.pt", "metrics.csv"):
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    real = gt._check_divergence

    def killed_at_step_7(value, recent, step, *a):
        if step == 7:
            raise KeyboardInterrupt
        return real(value, recent, step, *a)

    gt._check_divergence = killed_at_step_7
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg(pairs, tmp_path / "resumed"))
    finally:
        gt._check_divergence = real
    assert torch.load(tmp_path / "resumed" / "checkpoints" / "latest.pt", weights_only=True)["step"] == 4
    train(cfg(pairs, tmp_path / "resumed"))
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("student.pt", "metrics.csv"):
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes(), name


def test_break_even_arithmetic():
    # compiled: 30 s of warm-up, 0.1 s a step; eager: 1 s, 0.2 s a step -> (30 - 1) / 0.1 = 290 steps
    assert bench.break_even(30.0, 0.1, 1.0, 0.2) == 290
    assert bench.break_even(30.0, 0.2, 1.0, 0.2) is None      # not faster per step: never
    steady, warm = bench.timing([5.0, 1.0, 0.2, 0.3, 0.2, 0.25], warmup=2)
    assert steady == pytest.approx(0.225) and warm == pytest.approx(6.0 - 2 * 0.225)


@pytest.mark.slow
def test_the_benchmark_runs_at_toy_size(tmp_path):
    """The script end to end on the toy GET (its processes, timings, checks and tables); it compiles
    into inductor's usual cache, where the tests above left the toy's kernels."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_compile.py"), "--dry-run", "--steps", "5",
           "--check-steps", "8", "--cache-dir", cache_dir(), "--out", str(tmp_path)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with open(tmp_path / "train_compile.csv") as f:
        header = f.readline()
        rows = list(csv.DictReader(f))
    assert "CPU capability" in header and "1 thread" in header and torch.__version__ in header
    assert "train_compile.py --dry-run" in header
    assert len(rows) == 1 and rows[0]["model"] == bench.TOY_NAME and rows[0]["graphs"] == "1"
    assert all(rows[0][k] == "True" for k in ("loss_within_tolerance", "deterministic", "resume_exact"))
    assert float(rows[0]["compile_s_per_step"]) > 0 and float(rows[0]["eager_s_per_step"]) > 0
    assert "| toy GET truncated |" in (tmp_path / "train_compile.md").read_text()
