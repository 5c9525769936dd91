"""What notebooks/03_teacher shows: the sampler's noise levels and one trajectory seen from inside."""
from __future__ import annotations

import torch
from torch import Tensor

from getlib.edm import Denoiser, SamplerConfig, edm_sampler, latents_for_seeds, time_steps


def sampler_markdown(sampler: SamplerConfig) -> str:
    """The sampler of this profile in words, from its settings: its noise levels and its network
    evaluations per image (the teacher's NFE). Markdown."""
    n, rho = sampler.num_steps, sampler.rho
    levels = (f"t_i = ({sampler.sigma_max:g}^(1/{rho:g}) + i/{max(n - 1, 1)} ({sampler.sigma_min:g}^(1/{rho:g}) - "
              f"{sampler.sigma_max:g}^(1/{rho:g})))^{rho:g} for i = 0..{n - 1}, then t_{n} = 0")
    if sampler.solver == "heun":
        cost = (f"Heun's method evaluates the denoiser twice per step but the last: {sampler.nfe} evaluations "
                "per image (NFE)")
    else:
        cost = f"Euler's method evaluates the denoiser once per step: {sampler.nfe} evaluations per image (NFE)"
    return (f"This profile's sampler: {n} steps from t = {sampler.sigma_max:g} to 0 over the noise levels {levels}. "
            f"{cost}.")


def sigma_schedule(sampler: SamplerConfig) -> list[float]:
    """EDM's noise levels t_0 > ... > t_{N-1} > t_N = 0 for this sampler."""
    return time_steps(sampler.num_steps, sampler.sigma_min, sampler.sigma_max, sampler.rho).tolist()


@torch.no_grad()
def heun_trajectory(denoise: Denoiser, seeds: list[int], shape: tuple[int, int, int],
                    sampler: SamplerConfig = SamplerConfig(), num_classes: int | None = None) -> list[dict]:
    """One sampling run of `edm.edm_sampler`, seen from inside: for each of its steps the noise
    level, the state x_i and the denoised image D(x_i; t_i). It records the sampler's own calls of
    the denoiser (the first call of each step; Heun's corrector calls are skipped), so it is exactly
    what the pairs stage runs for these seeds (their latents and, with num_classes, their labels).
    The last row is the final image (t = 0). (B, C, H, W) float tensors."""
    calls = []

    def recording(x: Tensor, sigma: Tensor, class_labels: Tensor | None) -> Tensor:
        out = denoise(x, sigma, class_labels)
        calls.append((float(sigma), x.float().clone(), out.float().clone()))
        return out

    latents, labels = latents_for_seeds(seeds, shape, num_classes)
    final = edm_sampler(recording, latents, labels, sampler.num_steps, sampler.sigma_min, sampler.sigma_max,
                        sampler.rho, sampler.solver)
    # Heun calls D at t_i (the step's own call) and at t_{i+1} (its corrector), except in the last step
    steps = calls[::2] if sampler.solver == "heun" else calls
    return [{"step": i, "sigma": s, "state": x, "denoised": d} for i, (s, x, d) in enumerate(steps)] + [
        {"step": sampler.num_steps, "sigma": 0.0, "state": final.float(), "denoised": final.float()}]


def trajectory_rows(trajectory: list[dict], sample: int = 0, sigma_data: float = 0.5) -> Tensor:
    """One sample's trajectory as two image rows: the states x_i scaled by
    sigma_data / sqrt(sigma^2 + sigma_data^2), which gives them the data's spread at every noise level
    (else the first would be noise at 80x the scale) and leaves the final image as it is; then the
    denoised images D(x_i; t_i). (2 * steps, C, H, W), model space."""
    states = [r["state"][sample] * sigma_data / (r["sigma"] ** 2 + sigma_data ** 2) ** 0.5 for r in trajectory]
    return torch.cat([torch.stack(states).clamp(-1, 1), torch.stack([r["denoised"][sample] for r in trajectory])])
