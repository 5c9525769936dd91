"""What notebooks/05_distill shows: the student's recipe (from its settings), its parts, GET
iterating, what its loss supervises, and samples across training (each sample keyed by its seed, as
everywhere in the project)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from getlib.deq import fp_correction_weights
from getlib.edm import latents_for_seeds
from getlib.models import GET
from getlib.settings import GET_CONFIGS, DEQConfig, TrainConfig, recipe_of

_LOSS = {"l1": "L1", "l2": "L2 (mean squared error)"}
_RULE = {"abs": "the iterate with the lowest absolute residual ||f(z) - z|| (the paper's rule)",
         "rel": "the iterate with the lowest relative residual ||f(z) - z|| / ||f(z)||"}


def supervised_steps(deq: DEQConfig) -> list[int]:
    """The tracked steps (1 = the first after the no-grad solve) whose states GET's loss supervises,
    as `deq.solve_deq` returns them: the phantom gradient's every sup_gap-th state and its last;
    implicit differentiation's one state f(z*)."""
    if deq.grad == "implicit":
        return [1]
    return [i for i in range(1, deq.grad_steps + 1) if i % deq.sup_gap == 0 or i == deq.grad_steps]


def _solve_text(solver: str, iterations: int, tol: float, stop: str, return_final: bool) -> str:
    if return_final:
        return f"{iterations} iterations of f ({solver}, all of them run)"
    return (f"at most {iterations} iterations of f ({solver}, stopping once the "
            f"{'absolute' if stop == 'abs' else 'relative'} residual is below {tol:g})")


def recipe_markdown(cfg: TrainConfig, key: str | None = None) -> str:
    """This student's recipe in words, from its settings alone: which DEQ recipe, how many
    iterations run without and with autograd, which states the loss supervises with which weights,
    and how many evaluations of f sampling takes (the NFE the evaluation reports). Markdown."""
    who = f"**{key}** ({cfg.model})" if key else f"**{cfg.model}**"
    loss = _LOSS[cfg.loss]
    if cfg.model not in GET_CONFIGS:
        return (f"{who} is a ViT: one forward pass maps the latent to the image, in training and in sampling "
                f"(NFE 1). The {loss} loss is applied to that image.")
    deq = DEQConfig.from_dict(cfg.deq)
    steps = supervised_steps(deq)
    exact = deq.f_max_iter == 0 or deq.return_final   # the no-grad solve runs all its iterations
    # iterate numbers z_k from z0 (k = the no-grad iterations + the tracked step), when they are fixed
    states = (["f(z*)"] if deq.grad == "implicit" else
              [f"z_{deq.f_max_iter + i}" if exact else f"tracked state {i}" for i in steps])
    weights = fp_correction_weights(len(steps), cfg.gamma)
    if deq.f_max_iter == 0:
        start = "no iterations without autograd: the tracked part starts at z0 itself"
    else:
        start = (_solve_text(deq.f_solver, deq.f_max_iter, deq.f_tol, deq.f_stop_mode, deq.return_final)
                 + " from z0 without autograd")
    if deq.grad == "implicit":
        tracked = (f"then one step f(z*) differentiated implicitly at that solution (backward solve: {deq.b_solver}, "
                   f"at most {deq.b_max_iter} iterations)")
    else:
        damping = (": plain backpropagation" if deq.tau == 1
                   else f", damped: z <- {deq.tau:g} f(z) + {1 - deq.tau:g} z")
        tracked = (f"then {deq.grad_steps} iteration{'s' if deq.grad_steps > 1 else ''} of f tracked by autograd "
                   f"(the {deq.grad} gradient{damping})")
    if len(steps) == 1:
        supervised = f"one state, {states[0]}, with weight 1 (no fixed-point correction)"
    else:
        shown = ", ".join(f"{w:.3g}" for w in weights)
        supervised = (f"{len(steps)} states, {', '.join(states)}, with the fixed-point-correction weights "
                      f"gamma^(n-k-1) = {shown} (gamma = {cfg.gamma:g})")
    decoded = "the last iterate" if deq.return_final else _RULE[deq.f_stop_mode]
    sampling = (_solve_text(deq.eval_f_solver, deq.eval_f_max_iter, deq.eval_f_tol, deq.f_stop_mode, deq.return_final)
                + f" from z0, decoding {decoded}: NFE {deq.eval_f_max_iter} as the evaluation counts it "
                "(evaluations of f; the injection and the decoder run once)")
    lines = [f"{who} is a GET trained with the DEQ recipe `{recipe_of(deq)}`.", "",
             f"- **Training**: {start[0].upper() + start[1:]}; {tracked}.",
             f"- **Loss**: {loss} against the teacher's image on {supervised}.",
             f"- **Sampling**: {sampling}."]
    if deq.state_norm:
        lines.append("- **The map** f ends in a LayerNorm of the state (`state_norm`), so f maps into a bounded set "
                     "and has a fixed point; whether iteration reaches it is measured below and in the evaluation.")
    if deq.memory_efficient:
        lines.append("- **Memory-efficient**: each equilibrium block call is checkpointed in training.")
    return "\n".join(lines)


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
