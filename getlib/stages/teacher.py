"""Stage teacher@condition: train the embedded teacher, or take an official EDM checkpoint."""
from __future__ import annotations

import torch
from torch import Tensor

from getlib.checkpoints import load_teacher_of
from getlib.config import Params
from getlib.edm import Denoiser, SamplerConfig, edm_sampler, latents_for_seeds, time_steps
from getlib.io import atomic_copy, atomic_write_json
from getlib.settings import TeacherConfig
from getlib.stages.data import load_data
from getlib.teacher import train_teacher


def make_teacher(p: Params, condition: str, log=None) -> dict:
    """source 'train': train the embedded teacher on the training images; source 'checkpoint':
    copy the named EDM pickle in (so DVC caches and tracks it) and check that it loads."""
    if p.teacher.source == "checkpoint":
        src = p.teacher.checkpoint(condition, p.root)
        atomic_copy(src, p.work("teacher", condition, src.name))
        denoise, ident = load_teacher_of(p, condition)
        summary = {"condition": condition, **ident, "params": sum(x.numel() for x in denoise.parameters())}
    else:
        ds, folder = load_data(p), p.work("teacher", condition)
        folder.mkdir(parents=True, exist_ok=True)
        cfg = TeacherConfig(**p.teacher.train_settings(), cond=condition == "cond")
        summary = {"condition": condition, "kind": "embedded",
                   **train_teacher(ds.train_images, ds.train_labels, cfg, folder / "teacher.pt", log)}
        summary["params"] = sum(x.numel() for x in load_teacher_of(p, condition)[0].parameters())
    atomic_write_json(p.results(f"teacher-{condition}.json"), summary)
    return summary


# ------------------------------------------------------------------------------------------------
# What the notebook shows (views of this stage's objects; nothing here writes)
# ------------------------------------------------------------------------------------------------

def sigma_schedule(sampler: SamplerConfig) -> list[float]:
    """EDM's noise levels t_0 > ... > t_{N-1} > t_N = 0 for this sampler."""
    return time_steps(sampler.num_steps, sampler.sigma_min, sampler.sigma_max, sampler.rho).tolist()


@torch.no_grad()
def heun_trajectory(denoise: Denoiser, seeds: list[int], shape: tuple[int, int, int],
                    sampler: SamplerConfig = SamplerConfig(), labels: Tensor | None = None) -> list[dict]:
    """One sampling run of `edm.edm_sampler`, seen from inside: for each of its steps the noise
    level, the state x_i and the denoised image D(x_i; t_i). It records the sampler's own calls of
    the denoiser (the first call of each step; Heun's corrector calls are skipped), so it is exactly
    what the pairs stage runs. The last row is the final image (t = 0). (B, C, H, W) float tensors."""
    calls = []

    def recording(x: Tensor, sigma: Tensor, class_labels: Tensor | None) -> Tensor:
        out = denoise(x, sigma, class_labels)
        calls.append((float(sigma), x.float().clone(), out.float().clone()))
        return out

    latents, _ = latents_for_seeds(seeds, shape)
    final = edm_sampler(recording, latents, labels, sampler.num_steps, sampler.sigma_min, sampler.sigma_max,
                        sampler.rho, sampler.solver)
    # Heun calls D at t_i (the step's own call) and at t_{i+1} (its corrector), except in the last step
    steps = calls[::2] if sampler.solver == "heun" else calls
    return [{"step": i, "sigma": s, "state": x, "denoised": d} for i, (s, x, d) in enumerate(steps)] + [
        {"step": sampler.num_steps, "sigma": 0.0, "state": final.float(), "denoised": final.float()}]


def trajectory_rows(trajectory: list[dict], sample: int = 0, sigma_data: float = 0.5) -> Tensor:
    """One sample's trajectory as two image rows: the states x_i scaled to unit variance by EDM's
    c_in = 1 / sqrt(sigma^2 + sigma_data^2) (else the first would be all noise at 80x the scale),
    then the denoised images D(x_i; t_i). (2 * steps, C, H, W), model space."""
    states = [r["state"][sample] / (r["sigma"] ** 2 + sigma_data ** 2) ** 0.5 for r in trajectory]
    return torch.cat([torch.stack(states).clamp(-1, 1), torch.stack([r["denoised"][sample] for r in trajectory])])
