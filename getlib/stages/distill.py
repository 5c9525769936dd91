"""Stage distill@student: train one student on its condition's pairs, work/<profile>/students/<key>/.

A second worker can train other students of the same profile outside DVC, through this same function:

    python -m getlib.stages.distill profiles/claims.yaml get-paper-lr1e3-s0 [more students]

`dvc repro` later finds those runs finished (same settings, pairs and code) and keeps them."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from getlib.config import Params
from getlib.deq import fp_correction_weights
from getlib.edm import latents_for_seeds
from getlib.io import atomic_copytree, atomic_write_csv, atomic_write_json, remove_owned
from getlib.models import GET
from getlib.stages.launch import torchrun
from getlib.train import cli_args, resume_problems, reuse_problems, run_summary, train, training_log


def distill(p: Params, key: str) -> dict:
    """Train student `key`; copy its log (with the wall-clock columns) into results/<profile>/train/.

    DVC keeps the run folder between runs (persist) so that an interrupted run resumes from its
    checkpoint. It is resumed (a finished one reused) only when `train.resume_problems` finds
    nothing: same settings, pair set, training code, and an intact checkpoint. Otherwise the folder
    is replaced and the reason printed (a finished run is also in DVC's cache). With `reuse`, a
    finished run of that profile is copied in when `train.reuse_problems` finds it identical."""
    cfg = p.train_config(key)
    out = Path(cfg.out)
    nproc = p.nproc(key)
    problems = resume_problems(cfg, nproc)
    if problems:
        print(f"{out}: starting anew: {'; '.join(problems)}", flush=True)
        remove_owned(out, p.work("students"))
    source = p.reused("students", key)
    if source is not None and not (out.exists() and any(out.iterdir())):
        why_not = reuse_problems(cfg, source, nproc)
        if why_not:
            print(f"{out}: not reusing {source}: {'; '.join(why_not)}", flush=True)
        else:
            print(f"{out}: copying the identical finished run {source}", flush=True)
            remove_owned(out, p.work("students"))
            atomic_copytree(source, out)
    if nproc > 1:
        torchrun(nproc, "getlib.train", cli_args(cfg))
        summary = run_summary(out)
    else:
        summary = train(cfg)
    atomic_write_csv(training_log(out), p.results("train", f"{key}.csv"))
    atomic_write_json(p.results("train", f"{key}.json"), {k: v for k, v in summary.items() if k != "config"})
    return summary


# ------------------------------------------------------------------------------------------------
# What the notebook shows (views of this stage's objects; nothing here writes)
# ------------------------------------------------------------------------------------------------

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


def main(argv: list[str] | None = None) -> None:
    import argparse

    from getlib.config import load_params, project_root
    parser = argparse.ArgumentParser(description="Train students of a profile through the distill stage.")
    parser.add_argument("params", help="params.yaml or a profile file")
    parser.add_argument("students", nargs="+", help="keys of students in that file")
    args = parser.parse_args(argv)
    p = load_params(args.params, root=project_root())
    for key in args.students:
        summary = distill(p, key)
        print(f"{key}: {summary['steps']} steps", flush=True)


if __name__ == "__main__":
    main()
