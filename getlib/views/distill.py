"""What notebooks/05_distill shows: the student's parts, GET iterating, what its loss supervises, and
samples across training (each sample keyed by its seed, as everywhere in the project)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from getlib.deq import fp_correction_weights
from getlib.edm import latents_for_seeds
from getlib.models import GET


def parameter_parts(model: nn.Module) -> dict[str, int]:
    """Parameters per part: GET's injection (embedding, injection blocks, qkv injection), equilibrium
    blocks and decoder; a ViT's embedding, blocks and decoder. Positions and class table included."""
    parts = {"embedding": ["x_embedder", "pos_embed", "y_embedder"], "decoder": ["final_layer"]}
    if isinstance(model, GET):
        parts = {"injection": parts["embedding"] + ["blocks", "qkv_inj"], "equilibrium blocks": ["deq_blocks"],
                 "decoder": parts["decoder"]}
    else:
        parts["blocks"] = ["blocks"]
    count = {name: sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in prefixes)
             for name, prefixes in parts.items()}
    return {**count, "total": sum(p.numel() for p in model.parameters())}


def _inputs(model: nn.Module, seeds: list[int]) -> tuple[Tensor, Tensor | None]:
    return latents_for_seeds(seeds, (model.in_channels, model.input_size, model.input_size),
                             model.num_classes if model.cond else None)


@torch.no_grad()
def samples(model: nn.Module, seeds: list[int]) -> Tensor:
    """A student's samples for these seeds (their latents, labels and GET's z0, by the project's
    rule: `edm.latents_for_seeds`, `GET.initial_states`), model space."""
    latents, labels = _inputs(model.eval(), seeds)
    return model(latents, labels, z0=model.initial_states(seeds)) if isinstance(model, GET) else model(latents, labels)


@torch.no_grad()
def solver_trace(model: GET, seeds: list[int], iterations: int = 12) -> dict:
    """One sampling forward pass with `iterations` solver steps (tolerance 0) for these seeds:
    the decoded image, the residual per iteration (sample means) and the chosen iterate per sample."""
    latents, labels = _inputs(model.eval(), seeds)
    images, stats = model(latents, labels, z0=model.initial_states(seeds), return_stats=True,
                          eval_f_max_iter=iterations, eval_f_tol=0.0)
    return {"images": images, "abs_residual": stats.abs_trace.mean(1).tolist(),
            "rel_residual": stats.rel_trace.mean(1).tolist(), "chosen_iterate": stats.nstep.tolist()}


@torch.no_grad()
def training_states(model: GET, seeds: list[int], gamma: float = 0.8) -> tuple[list[Tensor], list[float]]:
    """The states GET's training loss supervises, decoded (training mode, no gradient), for these
    seeds' latents and z0, with their fixed-point-correction weights gamma^(n-k-1)."""
    latents, labels = _inputs(model, seeds)
    was = model.training
    states = model.train()(latents, labels, z0=model.initial_states(seeds))
    model.train(was)
    return states, fp_correction_weights(len(states), gamma)
