"""EDM maths: preconditioning and loss by hand, the sampler against a closed-form ODE, seeds."""
import math
import pickle
import sys

import pytest
import torch
from torch import nn

from getlib.checkpoints import load_edm_checkpoint
from getlib.edm import (EDMPrecond, SamplerConfig, edm_loss, edm_sampler, latents_for_seeds, precond_coeffs,
                        time_steps)


def test_preconditioning_by_hand():
    c_skip, c_out, c_in, c_noise = precond_coeffs(torch.tensor([1.0, 0.5, 80.0], dtype=torch.float64))
    # sigma = 1: 0.25 / 1.25, 0.5 / sqrt(1.25), 1 / sqrt(1.25), ln(1) / 4
    torch.testing.assert_close(c_skip, torch.tensor([0.2, 0.5, 0.25 / 6400.25], dtype=torch.float64))
    torch.testing.assert_close(c_out, torch.tensor([0.5 / math.sqrt(1.25), 0.25 / math.sqrt(0.5),
                                                    40 / math.sqrt(6400.25)], dtype=torch.float64))
    torch.testing.assert_close(c_in, torch.tensor([1 / math.sqrt(1.25), 1 / math.sqrt(0.5),
                                                   1 / math.sqrt(6400.25)], dtype=torch.float64))
    torch.testing.assert_close(c_noise, torch.tensor([0.0, math.log(0.5) / 4, math.log(80) / 4], dtype=torch.float64))


class Recorder(nn.Module):
    """F that returns a constant and records its inputs."""

    def __init__(self, value):
        super().__init__()
        self.value, self.calls = value, []

    def forward(self, x_in, c_noise, labels):
        self.calls.append((x_in.clone(), c_noise.clone()))
        return torch.full_like(x_in, self.value)


def test_precond_wrapper_applies_the_formula():
    net = Recorder(3.0)
    D = EDMPrecond(net)
    x = torch.full((2, 1, 2, 2), 2.0, dtype=torch.float64)
    out = D(x, torch.tensor(1.0, dtype=torch.float64))
    # D = 0.2 * 2 + (0.5 / sqrt(1.25)) * 3, F saw c_in * x = 2 / sqrt(1.25) and c_noise = 0
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full_like(out, 0.4 + 1.5 / math.sqrt(1.25)))
    torch.testing.assert_close(net.calls[0][0], torch.full((2, 1, 2, 2), 2 / math.sqrt(1.25)))
    assert torch.all(net.calls[0][1] == 0) and net.calls[0][1].shape == (2,)


def test_loss_by_hand():
    """A denoiser that returns zeros: loss = weight * y^2 with weight (s^2 + sd^2) / (s sd)^2."""
    y = torch.full((3, 1, 2, 2), 0.5)
    g = torch.Generator().manual_seed(0)
    loss = edm_loss(lambda x, s, c: torch.zeros_like(x), y, generator=g)
    sigma = (torch.randn(3, 1, 1, 1, generator=torch.Generator().manual_seed(0)) * 1.2 - 1.2).exp()
    weight = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2
    torch.testing.assert_close(loss, weight * 0.25 * torch.ones_like(y))
    # an identity denoiser leaves exactly the noise: loss = weight * (sigma n)^2 with n ~ N(0, 1)
    g, ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    loss = edm_loss(lambda x, s, c: x, y, generator=g)
    s1 = (torch.randn(3, 1, 1, 1, generator=ref) * 1.2 - 1.2).exp()
    n = torch.randn(y.shape, generator=ref)
    torch.testing.assert_close(loss, (s1 ** 2 + 0.25) / (s1 * 0.5) ** 2 * (n * s1) ** 2)
    # the noise reaches the denoiser at that sigma
    seen = {}
    edm_loss(lambda x, s, c: (seen.setdefault("s", s), x)[1], y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(seen["s"], sigma.flatten())


def test_time_steps_are_edms():
    t = time_steps(18)
    assert t.dtype == torch.float64 and len(t) == 19 and t[-1] == 0
    assert t[0].item() == pytest.approx(80.0) and t[17].item() == pytest.approx(0.002)
    i = 5
    expected = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert t[i].item() == pytest.approx(expected, rel=1e-12)


def gaussian_case(mu=0.3, s=0.6):
    """Data N(mu, s^2): D(x; sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu), and the PF-ODE keeps
    (x - mu) / sqrt(s^2 + sigma^2) constant, so x_0 = mu + (e sigma_max - mu) s / sqrt(s^2 + sigma_max^2)."""
    calls = []

    def denoise(x, sigma, labels):
        calls.append(1)
        return mu + s ** 2 / (s ** 2 + sigma ** 2) * (x - mu)

    e = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    exact = mu + (e.double() * 80 - mu) * s / math.sqrt(s ** 2 + 80 ** 2)
    return denoise, e, exact, calls


def test_sampler_converges_to_the_closed_form_and_heun_beats_euler():
    denoise, e, exact, calls = gaussian_case()
    errors = {}
    for steps in (4, 8, 18, 64, 256):
        calls.clear()
        x = edm_sampler(denoise, e, num_steps=steps)
        assert x.dtype == torch.float64 and len(calls) == 2 * steps - 1
        errors[steps] = (x - exact).abs().max().item()
    assert errors[4] > errors[8] > errors[18] > errors[64] > errors[256] and errors[256] < 1e-3
    assert errors[64] / errors[256] > 12  # second order: 4x the steps, ~16x less error
    calls.clear()
    euler = edm_sampler(denoise, e, num_steps=35, solver="euler")
    assert len(calls) == 35 == SamplerConfig().nfe
    assert errors[18] < 0.8 * (euler - exact).abs().max().item()  # equal evaluations: 35 each


def test_sampler_rejects_bad_settings():
    with pytest.raises(ValueError, match="solver must be 'heun' or 'euler'"):
        edm_sampler(lambda x, s, c: x, torch.zeros(1, 1, 2, 2), solver="dpm")


def test_latents_depend_on_the_seed_only():
    lat, lab = latents_for_seeds([5, 6, 7], (3, 4, 4), num_classes=10)
    alone, lab_alone = latents_for_seeds([6], (3, 4, 4), num_classes=10)
    assert torch.equal(lat[1], alone[0]) and lab[1] == lab_alone[0] and lat.dtype == torch.float32
    g = torch.Generator().manual_seed(6)  # EDM's rule: the image's own generator, latent then label
    assert torch.equal(alone[0], torch.randn(3, 4, 4, generator=g))
    assert lab_alone[0] == torch.randint(10, (), generator=g)
    assert latents_for_seeds([6], (3, 4, 4))[1] is None


# ------------------------------------------------------------------------------------------------
# Loading the official EDM checkpoints (exercised with a stand-in EDM repository)
# ------------------------------------------------------------------------------------------------

FAKE_NET = '''
import torch
class FakeVPPrecond(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.img_resolution, self.img_channels, self.label_dim = 32, 3, 0
        self.w = torch.nn.Parameter(torch.ones(()))
    def forward(self, x, sigma, class_labels=None):
        return x * self.w / (1 + sigma ** 2)
'''


@pytest.fixture
def fake_edm_repo(tmp_path, monkeypatch):
    repo = tmp_path / "edm"
    for pkg in ("dnnlib", "torch_utils"):
        (repo / pkg).mkdir(parents=True)
        (repo / pkg / "__init__.py").write_text("")
    (repo / "torch_utils" / "fake_net.py").write_text(FAKE_NET)
    monkeypatch.syspath_prepend(str(repo))
    from torch_utils.fake_net import FakeVPPrecond
    pkl = tmp_path / "edm-cifar10-32x32-uncond-vp.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"ema": FakeVPPrecond(), "augment_pipe": None}, f)
    yield repo, pkl
    for name in [m for m in sys.modules if m.startswith(("torch_utils", "dnnlib"))]:
        del sys.modules[name]


def test_edm_checkpoint_loads_through_the_edm_repo(fake_edm_repo, monkeypatch):
    import getlib.checkpoints as checkpoints
    from getlib.io import file_sha256

    repo, pkl = fake_edm_repo
    # unpickling runs code: a file that is not a pinned official checkpoint is refused unopened ...
    monkeypatch.setattr(pickle, "load", lambda f: pytest.fail("unpickled an unpinned file"))
    with pytest.raises(ValueError, match=f"{pkl}: sha256 {file_sha256(pkl)} is not an official.*trust_pickle"):
        load_edm_checkpoint(pkl, repo)
    monkeypatch.undo()
    load_edm_checkpoint(pkl, repo, trust=True)   # ... unless trusted ...
    monkeypatch.setitem(checkpoints.EDM_CHECKPOINT_SHA256, "uncond", file_sha256(pkl))
    net = load_edm_checkpoint(pkl, repo)          # ... or pinned
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert (net.img_resolution, net.img_channels, net.label_dim) == (32, 3, 0)
    x = edm_sampler(net, torch.randn(2, 3, 32, 32), num_steps=3)
    assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all()


def test_edm_network_takes_integer_labels_as_one_hot():
    from getlib.checkpoints import EDMNetwork

    class Cond(nn.Module):
        img_resolution, img_channels, label_dim = 4, 1, 10

        def forward(self, x, sigma, class_labels=None):
            return x + class_labels.argmax(1).float().view(-1, 1, 1, 1) + 100 * class_labels.sum(1).view(-1, 1, 1, 1)

    net = EDMNetwork(Cond())
    out = net(torch.zeros(2, 1, 4, 4), 1.0, torch.tensor([3, 7]))
    assert out[:, 0, 0, 0].tolist() == [103.0, 107.0]  # one-hot: argmax = label, sum = 1
    with pytest.raises(ValueError, match=r"class-conditional \(10 classes\): pass class_labels"):
        net(torch.zeros(2, 1, 4, 4), 1.0)


def test_missing_edm_checkpoint_says_what_to_download(tmp_path, fake_edm_repo):
    repo, _ = fake_edm_repo
    with pytest.raises(FileNotFoundError, match="edm-cifar10-32x32-cond-vp.pkl and put it there"):
        load_edm_checkpoint(tmp_path / "nope" / "edm-cifar10-32x32-cond-vp.pkl", repo)
    with pytest.raises(FileNotFoundError, match="git clone https://github.com/NVlabs/edm"):
        load_edm_checkpoint(fake_edm_repo[1], tmp_path / "no-repo")


def test_wrong_pickle_is_refused(tmp_path, fake_edm_repo):
    repo, _ = fake_edm_repo
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"model": 3}))
    with pytest.raises(ValueError, match="'ema' is a torch module; found \\['model'\\]"):
        load_edm_checkpoint(other, repo, trust=True)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable EDM network pickle"):
        load_edm_checkpoint(junk, repo, trust=True)
