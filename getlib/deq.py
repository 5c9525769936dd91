"""Deep equilibrium machinery: forward solvers, gradients, fixed-point correction.

A DEQ layer outputs z* = f(z*). This module finds z* (forward solvers), differentiates through it
(gradients) and weights the losses of the states that training supervises (fixed-point correction).

Solvers and gradients are chosen by name from registries, in the spirit of torchdeq:

    SOLVERS   'fixed_point_iter' | 'anderson'
    GRADIENTS 'phantom' (alias 'unrolled') | 'implicit'

The paper's recipe (docs/paper.md, "The DEQ recipe") is the default of `DEQConfig`:
train by unrolling f 6 times from z0 with autograd (no-grad solve of 0 iterations, phantom
gradient with k = 6 and tau = 1) and supervise all 6 states; sample with at most 6 fixed-point
iterations, tolerance 1e-3, returning per sample the lowest-residual iterate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from getlib.settings import DEQConfig

__all__ = [
    "DEQConfig", "SolverStats", "solve_deq",
    "fixed_point_iter", "anderson", "SOLVERS", "GRADIENTS",
    "phantom_grad", "implicit_grad", "fp_correction_weights", "fp_correction", "LOSSES",
]

EPS = 1e-9  # guards the relative residual ||f(z) - z|| / ||f(z)|| against a zero state


# ------------------------------------------------------------------------------------------------
# Solver statistics
# ------------------------------------------------------------------------------------------------

@dataclass
class SolverStats:
    """What a solve did, per sample.

    abs_trace, rel_trace: (n_iter, B) residuals ||f(z_k) - z_k||_2 and that divided by ||f(z_k)||_2,
        one row per function evaluation (k = 0 .. n_iter-1).
    nstep: (B,) number of f evaluations that produced the returned iterate (0: the initial state).
    abs_lowest, rel_lowest: (B,) residuals of the returned iterate (inf when nstep is 0).
    n_iter: evaluations of f the solve ran (the batch stops when all samples are done).
    """
    abs_trace: Tensor
    rel_trace: Tensor
    nstep: Tensor
    abs_lowest: Tensor
    rel_lowest: Tensor
    n_iter: int
    stop_mode: str = "abs"


class _Tracker:
    """Keeps, per sample, the lowest-residual candidate seen so far (strictly smaller replaces)."""

    def __init__(self, z0: Tensor, stop_mode: str, tol: float, per_sample_stop: bool, return_final: bool = False):
        if stop_mode not in ("abs", "rel"):
            raise ValueError(f"stop_mode must be 'abs' or 'rel', got {stop_mode!r}")
        b = z0.shape[0]
        self.stop_mode, self.tol, self.per_sample_stop = stop_mode, tol, per_sample_stop
        self.return_final = return_final
        self.best = z0
        inf = torch.full((b,), float("inf"), device=z0.device)
        self.abs_lowest, self.rel_lowest = inf.clone(), inf.clone()
        self.nstep = torch.zeros(b, dtype=torch.long, device=z0.device)
        self.done = torch.zeros(b, dtype=torch.bool, device=z0.device)
        self.abs_trace: list[Tensor] = []
        self.rel_trace: list[Tensor] = []

    def update(self, z: Tensor, fz: Tensor, k: int) -> bool:
        """Record evaluation k (1-based) f(z) of iterate z; return True when the solve may stop."""
        diff = (fz - z).flatten(1).norm(dim=1).float()
        rel = diff / (fz.flatten(1).norm(dim=1).float() + EPS)
        self.abs_trace.append(diff)
        self.rel_trace.append(rel)
        r = diff if self.stop_mode == "abs" else rel
        lowest = self.abs_lowest if self.stop_mode == "abs" else self.rel_lowest
        better = torch.ones_like(r, dtype=torch.bool) if self.return_final else r < lowest
        if self.per_sample_stop:
            better &= ~self.done  # a sample that met the tolerance keeps the iterate that met it
        shape = (-1,) + (1,) * (z.dim() - 1)
        self.best = torch.where(better.view(shape), fz, self.best)
        self.abs_lowest = torch.where(better, diff, self.abs_lowest)
        self.rel_lowest = torch.where(better, rel, self.rel_lowest)
        self.nstep = torch.where(better, torch.full_like(self.nstep, k), self.nstep)
        if self.return_final:
            return False  # every iteration runs and the last one is kept
        below = r < self.tol
        if self.per_sample_stop:
            self.done |= below
            return bool(self.done.all())
        return bool(below.all())  # the paper's rule: every sample's current residual is below tol

    def stats(self, n_iter: int) -> SolverStats:
        b = self.nstep.shape[0]
        empty = torch.zeros(0, b, device=self.nstep.device)
        return SolverStats(
            abs_trace=torch.stack(self.abs_trace) if self.abs_trace else empty,
            rel_trace=torch.stack(self.rel_trace) if self.rel_trace else empty,
            nstep=self.nstep, abs_lowest=self.abs_lowest, rel_lowest=self.rel_lowest,
            n_iter=n_iter, stop_mode=self.stop_mode,
        )


# ------------------------------------------------------------------------------------------------
# Forward solvers: f, z0 -> (z*, stats). Each evaluation of f counts as one iteration.
# ------------------------------------------------------------------------------------------------

def fixed_point_iter(f: Callable[[Tensor], Tensor], z0: Tensor, max_iter: int = 6, tol: float = 1e-3,
                     stop_mode: str = "abs", per_sample_stop: bool = False,
                     return_final: bool = False) -> tuple[Tensor, SolverStats]:
    """Plain iteration z_{k+1} = f(z_k).

    Iteration k evaluates f(z_k) and its residual r_k = ||f(z_k) - z_k||; per sample the f(z_k)
    with the smallest r_k so far is kept and returned (not the last one). The loop stops after
    `max_iter` evaluations, or early once every sample's current r_k is below `tol`. With
    `per_sample_stop` a sample is frozen at the first iterate that meets the tolerance, which makes
    each sample's result independent of the rest of its batch; the loop stops when all are frozen.
    With `return_final` (torchdeq's name) all max_iter iterations run and the last one is returned.
    With max_iter = 0 it returns z0.
    """
    track = _Tracker(z0, stop_mode, tol, per_sample_stop, return_final)
    z, n = z0, 0
    for k in range(1, max_iter + 1):
        fz = f(z)
        n = k
        if track.update(z, fz, k):
            break
        z = fz
    return track.best, track.stats(n)


def anderson(f: Callable[[Tensor], Tensor], z0: Tensor, max_iter: int = 6, tol: float = 1e-3,
             stop_mode: str = "abs", per_sample_stop: bool = False, return_final: bool = False, m: int = 5,
             lam: float = 1e-4, beta: float = 1.0) -> tuple[Tensor, SolverStats]:
    """Anderson acceleration (type II, Walker & Ni 2011) with memory m, Tikhonov lam, mixing beta.

    The next iterate mixes the last n = min(k, m) evaluations: x_{k+1} = sum_i a_i (beta f(x_i) +
    (1 - beta) x_i), with a = argmin ||sum_i a_i g_i||^2 + lam s ||a||^2 subject to sum_i a_i = 1,
    g_i = f(x_i) - x_i (solved in float64 through the bordered normal equations). The Tikhonov term
    is scaled by s = mean_i ||g_i||^2, so it means the same at any residual size (an absolute lam,
    as in torchdeq, swamps the residuals near convergence and stalls to plain averaging). The first step is
    a plain iteration, so one evaluation gives the same result as `fixed_point_iter`. Residual
    tracking, the kept iterate and stopping follow `fixed_point_iter`.
    """
    track = _Tracker(z0, stop_mode, tol, per_sample_stop, return_final)
    b = z0.shape[0]
    xs: list[Tensor] = []   # flattened iterates x_i, (B, d)
    fs: list[Tensor] = []   # flattened f(x_i)
    x, n = z0, 0
    for k in range(1, max_iter + 1):
        fx = f(x)
        n = k
        if track.update(x, fx, k):
            break
        xs.append(x.reshape(b, -1))
        fs.append(fx.reshape(b, -1))
        xs, fs = xs[-m:], fs[-m:]
        X, F = torch.stack(xs, 1).to(z0.dtype), torch.stack(fs, 1).to(z0.dtype)   # (B, n, d)
        G = (F - X).double()
        nh = G.shape[1]
        H = torch.zeros(b, nh + 1, nh + 1, dtype=torch.float64, device=z0.device)
        H[:, 0, 1:] = H[:, 1:, 0] = 1.0
        GG = G @ G.transpose(1, 2)                                # (B, n, n)
        scale = GG.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-300)[:, None, None]
        H[:, 1:, 1:] = GG + lam * scale * torch.eye(nh, dtype=torch.float64, device=z0.device)
        rhs = torch.zeros(b, nh + 1, 1, dtype=torch.float64, device=z0.device)
        rhs[:, 0] = 1.0
        alpha = torch.linalg.solve(H, rhs)[:, 1:, 0].to(X.dtype)  # (B, n), sums to 1
        with torch.autocast(z0.device.type, enabled=False):  # keep the state in z0's dtype under AMP
            mixed = beta * F + (1.0 - beta) * X
            x = (alpha.unsqueeze(1) @ mixed).squeeze(1).view_as(z0).to(z0.dtype)
    return track.best, track.stats(n)


SOLVERS: dict[str, Callable[..., tuple[Tensor, SolverStats]]] = {
    "fixed_point_iter": fixed_point_iter,
    "anderson": anderson,
}


# ------------------------------------------------------------------------------------------------
# Gradients: how autograd reaches the parameters of f from (an estimate of) z*
# ------------------------------------------------------------------------------------------------

def phantom_grad(f: Callable[[Tensor], Tensor], z_star: Tensor, steps: int = 6, tau: float = 1.0,
                 sup_gap: int = 1) -> list[Tensor]:
    """Phantom gradient: `steps` damped iterations z <- tau f(z) + (1 - tau) z tracked by autograd.

    Starting from a solver estimate z* (or from z0 itself, as the paper does), it returns the
    states to supervise: every `sup_gap`-th state and always the last one, in order. With tau = 1
    this is plain backpropagation through `steps` unrolled iterations (the paper's recipe:
    steps = 6, sup_gap = 1 -> the 6 states z_1 .. z_6).
    """
    if steps < 1:
        raise ValueError(f"phantom gradient needs steps >= 1, got {steps}")
    if sup_gap < 1:
        raise ValueError(f"sup_gap must be >= 1, got {sup_gap}")
    z = z_star.detach()
    states = []
    for i in range(1, steps + 1):
        z = f(z) if tau == 1.0 else tau * f(z) + (1.0 - tau) * z
        if i % sup_gap == 0 or i == steps:
            states.append(z)
    return states


def implicit_grad(f: Callable[[Tensor], Tensor], z_star: Tensor,
                  backward_solve: Callable[[Callable[[Tensor], Tensor], Tensor], tuple[Tensor, SolverStats]]
                  ) -> list[Tensor]:
    """Implicit differentiation at the fixed point.

    Returns [f(z*)], one re-evaluation of f at the (detached) solution. Its incoming gradient
    v = dL/dz* is replaced by g solving the backward fixed point g = J^T g + v with J = df/dz at z*
    (vector-Jacobian products through that re-evaluation; `backward_solve(map, init)` solves it),
    so that the parameters receive v (I - J)^{-1} df/dtheta: the exact gradient of a true fixed point.
    """
    z = z_star.detach().requires_grad_()
    fz = f(z)
    if not fz.requires_grad:  # nothing in f needs a gradient (e.g. frozen weights)
        return [fz]

    def backward_fixed_point(v: Tensor) -> Tensor:
        handle.remove()  # the VJPs below must not re-enter this hook
        g, _ = backward_solve(lambda g: torch.autograd.grad(fz, z, g, retain_graph=True)[0] + v, v)
        return g

    handle = fz.register_hook(backward_fixed_point)
    return [fz]


# ------------------------------------------------------------------------------------------------
# Fixed-point correction
# ------------------------------------------------------------------------------------------------

def fp_correction_weights(n: int, gamma: float = 0.8) -> list[float]:
    """Weights gamma^(n-k-1), k = 0..n-1, of the n supervised states (last state weight 1)."""
    return [gamma ** (n - k - 1) for k in range(n)]


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"l1": F.l1_loss, "l2": F.mse_loss}   # per state


def fp_correction(loss_fn: Callable[[Tensor, Tensor], Tensor], preds: Sequence[Tensor] | Tensor,
                  target: Tensor, gamma: float = 0.8) -> tuple[Tensor, list[Tensor]]:
    """Sum over states k of gamma^(n-k-1) * loss_fn(pred_k, target) (summed, not normalised).

    `preds` is the list a GET returns in training mode (or one tensor, e.g. a ViT's output).
    Returns the total and the detached per-state losses (for logging).
    """
    preds = [preds] if isinstance(preds, Tensor) else list(preds)
    losses = [loss_fn(p, target) for p in preds]
    weights = fp_correction_weights(len(losses), gamma)
    total = sum(w * l for w, l in zip(weights, losses))
    return total, [l.detach() for l in losses]


# ------------------------------------------------------------------------------------------------
# The configured DEQ
# ------------------------------------------------------------------------------------------------

def _solve(cfg: DEQConfig, name: str, f: Callable[[Tensor], Tensor], z0: Tensor, max_iter: int, tol: float,
           stop_mode: str) -> tuple[Tensor, SolverStats]:
    """Run solver `name` with `cfg`'s solver settings."""
    extra = dict(m=cfg.anderson_m, lam=cfg.anderson_lam, beta=cfg.anderson_beta) if name == "anderson" else {}
    return SOLVERS[name](f, z0, max_iter=max_iter, tol=tol, stop_mode=stop_mode,
                         per_sample_stop=cfg.per_sample_stop, return_final=cfg.return_final, **extra)


GRADIENTS: dict[str, Callable[[Callable[[Tensor], Tensor], Tensor, DEQConfig], list[Tensor]]] = {
    "phantom": lambda f, z, c: phantom_grad(f, z, c.grad_steps, c.tau, c.sup_gap),
    "unrolled": lambda f, z, c: phantom_grad(f, z, c.grad_steps, c.tau, c.sup_gap),  # the paper's name (tau=1)
    "implicit": lambda f, z, c: implicit_grad(
        f, z, lambda g_map, init: _solve(c, c.b_solver, g_map, init, c.b_max_iter, c.b_tol, c.f_stop_mode)),
}


def solve_deq(f: Callable[[Tensor], Tensor], z0: Tensor, cfg: DEQConfig,
              training: bool) -> tuple[list[Tensor], SolverStats]:
    """Solve z* = f(z*) from z0 and return the states the caller decodes, with solver statistics.

    Training returns the states the gradient produced (the phantom gradient's supervised states,
    or [f(z*)] for implicit differentiation) after a no-grad solve of cfg.f_max_iter iterations.
    Evaluation returns [z*], the lowest-residual iterate of the evaluation solve, without autograd.
    """
    if not training:
        with torch.no_grad():
            z, stats = _solve(cfg, cfg.eval_f_solver, f, z0, cfg.eval_f_max_iter, cfg.eval_f_tol, cfg.f_stop_mode)
        return [z], stats
    with torch.no_grad():
        z, stats = _solve(cfg, cfg.f_solver, f, z0.detach(), cfg.f_max_iter, cfg.f_tol, cfg.f_stop_mode)
    return GRADIENTS[cfg.grad](f, z, cfg), stats
