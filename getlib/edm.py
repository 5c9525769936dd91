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

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from getlib.images import to_uint8
from getlib.settings import SamplerConfig

__all__ = ["SIGMA_DATA", "precond_coeffs", "EDMPrecond", "edm_loss", "SamplerConfig", "time_steps",
           "edm_sampler", "latents_for_seeds", "seeds_by_class", "sample_teacher", "Denoiser"]

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


def seeds_by_class(first: int, n: int, shape: Sequence[int], classes: int | None) -> tuple[list[int], int | None]:
    """n seeds from `first` on; class-conditional: the first `n // classes` seeds (at least one) of
    each class, in class order (a seed's label is drawn with its latent), and that count per class."""
    if not classes:
        return list(range(first, first + n)), None
    _, labels = latents_for_seeds(range(first, first + 40 * n), shape, classes)
    per = max(1, n // classes)
    return [first + s for c in range(classes) for s in (labels == c).nonzero().flatten()[:per].tolist()], per


@torch.no_grad()
def sample_teacher(denoise: Denoiser, n: int, shape: tuple[int, int, int], num_classes: int | None = None,
                   seed_offset: int = 0, batch_size: int = 500, sampler: SamplerConfig = SamplerConfig(),
                   device: torch.device | str = "cpu") -> Tensor:
    """n teacher images (uint8) with EDM's deterministic sampler (35 network evaluations by default)."""
    out = []
    for lo in range(0, n, batch_size):
        latents, labels = latents_for_seeds(range(seed_offset + lo, seed_offset + min(n, lo + batch_size)), shape, num_classes)
        x = edm_sampler(denoise, latents.to(device), None if labels is None else labels.to(device),
                        num_steps=sampler.num_steps, sigma_min=sampler.sigma_min, sigma_max=sampler.sigma_max,
                        rho=sampler.rho, solver=sampler.solver)
        out.append(to_uint8(x.float().cpu()))
    return torch.cat(out)
