"""The teacher's maths, exactly EDM (Karras et al. 2022): preconditioning, loss, sampler, seeds.

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))
    c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sd^2 + sigma^2),  c_noise = ln(sigma) / 4,     sd = sigma_data = 0.5

The deterministic sampler (EDM Algorithm 1 without churn) integrates the probability-flow ODE
dx/dsigma = (x - D(x; sigma)) / sigma from sigma_max down to 0 in float64, on the time steps
t_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, t_N = 0, with Heun's
correction on every step but the last: 18 steps = 35 network evaluations.

A seed fully determines a pair: `latents_for_seeds` draws each latent (and class label) from its
own CPU generator, so nothing depends on batch size, worker count or device.
"""
from __future__ import annotations

import math
import pickle
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from getlib.io import file_sha256

__all__ = ["SIGMA_DATA", "precond_coeffs", "EDMPrecond", "edm_loss", "SamplerConfig", "time_steps",
           "edm_sampler", "latents_for_seeds", "load_edm_checkpoint", "EDMNetwork", "EDM_CHECKPOINT_URLS"]

SIGMA_DATA = 0.5

Denoiser = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]  # D(x, sigma, class_labels)


# ------------------------------------------------------------------------------------------------
# Preconditioning and loss
# ------------------------------------------------------------------------------------------------

def precond_coeffs(sigma: Tensor, sigma_data: float = SIGMA_DATA) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) of EDM's preconditioning at noise level sigma."""
    sd2 = sigma_data ** 2
    c_skip = sd2 / (sigma ** 2 + sd2)
    c_out = sigma * sigma_data / (sigma ** 2 + sd2).sqrt()
    c_in = 1 / (sd2 + sigma ** 2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


class EDMPrecond(nn.Module):
    """Wraps a raw network F(x_in, c_noise, class_labels) into the denoiser D(x, sigma, class_labels).

    Like EDM's own wrapper, it computes in the network's dtype (float32) whatever the dtype of x
    (the sampler passes float64), and returns float32.
    """

    def __init__(self, net: nn.Module, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.net, self.sigma_data = net, sigma_data

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        x = x.float()
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
        c_skip, c_out, c_in, c_noise = precond_coeffs(sigma, self.sigma_data)
        F_x = self.net(c_in * x, c_noise.flatten().expand(x.shape[0]), class_labels)
        return c_skip * x + c_out * F_x.float()


def edm_loss(denoiser: Denoiser, images: Tensor, class_labels: Tensor | None = None,
             P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float = SIGMA_DATA,
             generator: torch.Generator | None = None) -> Tensor:
    """EDM's training loss, per element: ln sigma ~ N(P_mean, P_std^2), weight
    (sigma^2 + sd^2) / (sigma sd)^2, squared error of D(y + n; sigma) against the clean y."""
    b = images.shape[0]
    rnd = torch.randn(b, 1, 1, 1, generator=generator, device=images.device)
    sigma = (rnd * P_std + P_mean).exp()
    weight = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
    noise = torch.randn(images.shape, generator=generator, device=images.device) * sigma
    denoised = denoiser(images + noise, sigma.flatten(), class_labels)
    return weight * (denoised - images) ** 2


# ------------------------------------------------------------------------------------------------
# Deterministic sampler
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamplerConfig:
    """The sampler's settings (recorded with every pair set). Defaults: EDM's CIFAR-10 sampler."""
    num_steps: int = 18
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    solver: str = "heun"

    def __post_init__(self):
        if self.solver not in ("heun", "euler"):
            raise ValueError(f"sampler solver must be 'heun' or 'euler', got {self.solver!r}")
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"sampler num_steps must be an integer >= 1, got {self.num_steps!r}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if not 0 < self.rho < math.inf or not self.sigma_max < math.inf:
            raise ValueError(f"sampler rho and sigma_max must be finite and rho > 0, got rho={self.rho}, "
                             f"sigma_max={self.sigma_max}")

    @property
    def nfe(self) -> int:
        """Network evaluations per image: Heun corrects every step but the last."""
        return 2 * self.num_steps - 1 if self.solver == "heun" else self.num_steps

    def as_dict(self) -> dict:
        return {**asdict(self), "nfe": self.nfe}


def time_steps(num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
               rho: float = 7.0, device: torch.device | str | None = None) -> Tensor:
    """t_0 = sigma_max > ... > t_{N-1} = sigma_min, then t_N = 0; float64, N + 1 entries."""
    i = torch.arange(num_steps, dtype=torch.float64, device=device)
    t = (sigma_max ** (1 / rho) + i / max(num_steps - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros_like(t[:1])])


@torch.no_grad()
def edm_sampler(denoise: Denoiser, latents: Tensor, class_labels: Tensor | None = None,
                num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
                rho: float = 7.0, solver: str = "heun") -> Tensor:
    """x_0 from unit-Gaussian `latents` (scaled by sigma_max here), in float64.

    `denoise(x, sigma, class_labels)` returns D(x; sigma) for a batch x and a scalar sigma.
    """
    SamplerConfig(num_steps, sigma_min, sigma_max, rho, solver)  # validates the settings
    t = time_steps(num_steps, sigma_min, sigma_max, rho, device=latents.device)
    x = latents.to(torch.float64) * t[0]
    for i in range(num_steps):
        t_cur, t_next = t[i], t[i + 1]
        d_cur = (x - denoise(x, t_cur, class_labels).to(torch.float64)) / t_cur
        x_euler = x + (t_next - t_cur) * d_cur
        if solver == "heun" and i < num_steps - 1:
            d_prime = (x_euler - denoise(x_euler, t_next, class_labels).to(torch.float64)) / t_next
            x = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
        else:
            x = x_euler
    return x


# ------------------------------------------------------------------------------------------------
# Per-seed noise
# ------------------------------------------------------------------------------------------------

def latents_for_seeds(seeds: Sequence[int] | Tensor, shape: Sequence[int],
                      num_classes: int | None = None) -> tuple[Tensor, Tensor | None]:
    """Unit-Gaussian latents (B, *shape) in float32 and, for class-conditional data, labels (B,).

    Each image gets its own CPU generator seeded with its seed (mod 2^32), which draws the latent and
    then the label, as EDM's generator does; the result depends on the seed alone.
    """
    latents, labels = [], []
    for s in (seeds.tolist() if isinstance(seeds, Tensor) else seeds):
        g = torch.Generator().manual_seed(int(s) % (1 << 32))
        latents.append(torch.randn(tuple(shape), generator=g))
        if num_classes:
            labels.append(torch.randint(num_classes, (), generator=g))
    return torch.stack(latents), (torch.stack(labels) if num_classes else None)


# ------------------------------------------------------------------------------------------------
# The official EDM checkpoints (CIFAR-10 profiles)
# ------------------------------------------------------------------------------------------------

EDM_CHECKPOINT_URLS = {
    "uncond": "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl",
    "cond": "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-cond-vp.pkl",
}
# sha256 of the official pickles that `load_edm_checkpoint` unpickles without being told to trust
# the file. The unconditional one's is recorded alike by several public projects that verify their
# download; the conditional one's could not be read from this project's (offline) machines, so it is
# not pinned: load it with trust=True (teacher.trust_pickle) after checking your download.
EDM_CHECKPOINT_SHA256 = {
    "uncond": "4d5dcc1f1d0d41c8934ad21626eeddbdc0460182becf9fc059a0631b1eedb4da",
}


def load_edm_checkpoint(pkl_path: str | Path, edm_repo: str | Path, trust: bool = False) -> nn.Module:
    """The 'ema' network of an official EDM pickle, in eval mode without gradients.

    EDM pickles hold their own classes: the EDM repository (github.com/NVlabs/edm, for its
    `dnnlib` and `torch_utils` packages) must be importable, so `edm_repo` is put on sys.path.
    Unpickling runs code from the file: a file whose sha256 is not one of EDM_CHECKPOINT_SHA256 is
    refused before it is opened, unless `trust` says it comes from a source you trust.
    The network is called as net(x, sigma, class_labels) with one-hot labels (label_dim classes).
    """
    pkl_path, edm_repo = Path(pkl_path), Path(edm_repo)
    kind = "cond" if "cond" in pkl_path.name and "uncond" not in pkl_path.name else "uncond"
    if not pkl_path.is_file():
        raise FileNotFoundError(
            f"EDM checkpoint not found at {pkl_path}. Download {EDM_CHECKPOINT_URLS[kind]} "
            f"and put it there (or set teacher.checkpoint in params.yaml to where it is).")
    if not (edm_repo / "dnnlib").is_dir() or not (edm_repo / "torch_utils").is_dir():
        raise FileNotFoundError(
            f"EDM repository not found at {edm_repo} (it needs dnnlib/ and torch_utils/ to unpickle "
            f"the checkpoint): `git clone https://github.com/NVlabs/edm {edm_repo}` "
            f"(or set teacher.edm_repo in params.yaml).")
    if not trust:
        digest = file_sha256(pkl_path)
        if digest not in EDM_CHECKPOINT_SHA256.values():
            raise ValueError(
                f"{pkl_path}: sha256 {digest} is not an official EDM checkpoint's pinned here "
                f"({EDM_CHECKPOINT_SHA256}). Unpickling runs code from the file, so only pinned files are "
                f"loaded; for a file you trust (e.g. the conditional checkpoint, not pinned yet) set "
                f"teacher.trust_pickle: true (--trust-pickle on the command line).")
    if str(edm_repo.resolve()) not in sys.path:
        sys.path.insert(0, str(edm_repo.resolve()))
    try:
        with open(pkl_path, "rb") as f:
            data = pickle.load(f)
    except Exception as e:  # whatever unpickling a wrong or damaged file raises
        raise ValueError(f"{pkl_path}: not a readable EDM network pickle ({type(e).__name__}: {e})") from e
    net = data.get("ema") if isinstance(data, dict) else None
    if not isinstance(net, nn.Module):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{pkl_path}: expected an EDM network pickle, a dict whose 'ema' is a torch "
                         f"module; found {found}")
    for attr in ("img_resolution", "img_channels", "label_dim"):
        if not hasattr(net, attr):
            raise ValueError(f"{pkl_path}: the 'ema' network has no '{attr}': not an EDM denoiser")
    return EDMNetwork(net).eval().requires_grad_(False)


class EDMNetwork(nn.Module):
    """An official EDM network as a `Denoiser`: integer class labels become the one-hot vectors it
    takes. img_resolution, img_channels and label_dim are the network's."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.img_resolution, self.img_channels, self.label_dim = net.img_resolution, net.img_channels, net.label_dim

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        if self.label_dim and class_labels is None:
            raise ValueError(f"this EDM network is class-conditional ({self.label_dim} classes): pass class_labels")
        onehot = F.one_hot(class_labels, self.label_dim).float() if self.label_dim else None
        return self.net(x, sigma, onehot)
