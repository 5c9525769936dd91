"""The embedded teacher: it learns, its EMA ramps up as EDM's, its checkpoint round-trips."""
import pytest
import torch

from getlib.data import digits
from getlib.edm import edm_sampler
from getlib.ema import ema_beta
from getlib.checkpoints import load_teacher
from getlib.teacher import TeacherConfig, train_teacher

TINY = dict(channels=(16, 16), emb_dim=32, batch_size=64, warmup_steps=10)


def test_ema_half_life_ramps_up_as_in_edm():
    # early: half-life = 5% of the images seen; later: the configured half-life
    assert ema_beta(1000, 100, 50_000, 0.05) == pytest.approx(0.5 ** (100 / 50))
    assert ema_beta(10 ** 7, 100, 50_000, 0.05) == pytest.approx(0.5 ** (100 / 50_000))
    assert ema_beta(1000, 100, 50_000, None) == pytest.approx(0.5 ** (100 / 50_000))


@pytest.mark.parametrize("cond", [False, True])
def test_teacher_learns_and_round_trips(tmp_path, cond):
    x, y = digits()
    cfg = TeacherConfig(**TINY, cond=cond, max_steps=60, lr=2e-3)
    logs = []
    summary = train_teacher(x, y, cfg, tmp_path / "teacher.pt", log=logs.append)
    assert summary["steps"] == 60 and logs and logs[-1]["step"] == 60
    teacher = load_teacher(tmp_path / "teacher.pt")
    assert not any(p.requires_grad for p in teacher.parameters())
    # the EMA denoiser beats the trivial D(x) = c_skip x at a mid noise level
    g = torch.Generator().manual_seed(0)
    sigma = torch.tensor(0.5)
    noisy = x[:256] + sigma * torch.randn(x[:256].shape, generator=g)
    labels = y[:256] if cond else None
    with torch.no_grad():
        err = (teacher(noisy, sigma, labels) - x[:256]).pow(2).mean()
    trivial = (0.25 / (0.25 + 0.25) * noisy - x[:256]).pow(2).mean()
    assert err < 0.6 * trivial
    samples = edm_sampler(teacher, torch.randn(4, 1, 8, 8), labels[:4] if cond else None, num_steps=4)
    assert samples.shape == (4, 1, 8, 8) and torch.isfinite(samples).all()


def test_time_budget_stops_training(tmp_path):
    x, y = digits()
    summary = train_teacher(x, y, TeacherConfig(**TINY, max_steps=10_000, time_budget_s=0.5), tmp_path / "t.pt")
    assert 0 < summary["steps"] < 10_000


def test_bad_teacher_checkpoints_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the teacher stage first"):
        load_teacher(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a teacher checkpoint"):
        load_teacher(tmp_path / "other.pt")

