"""DEQ solvers and gradients: known fixed points, finite differences, and torchdeq as a reference."""
import pytest
import torch
from torch import nn
from torchdeq import get_deq
from torchdeq.solver import get_solver

from getlib.deq import (DEQConfig, SOLVERS, anderson, fixed_point_iter, fp_correction,
                        fp_correction_weights, implicit_grad, phantom_grad, solve_deq)


def contraction(batch=4, dim=10, seed=0, dtype=torch.float64):
    """f(z) = A z + b with a different contraction factor per sample; z* = (I - A)^-1 b."""
    g = torch.Generator().manual_seed(seed)
    V, _ = torch.linalg.qr(torch.randn(batch, dim, dim, generator=g, dtype=dtype))
    eig = torch.linspace(-1, 1, dim, dtype=dtype) * torch.linspace(0.5, 0.95, batch, dtype=dtype)[:, None]
    A = V @ torch.diag_embed(eig) @ V.transpose(1, 2)                          # spectral radius 0.5..0.95
    b = torch.randn(batch, dim, generator=g, dtype=dtype)
    z_star = torch.linalg.solve(torch.eye(dim, dtype=dtype) - A, b)
    return (lambda z: (A @ z.unsqueeze(-1)).squeeze(-1) + b), z_star


class SmallDEQLayer(nn.Module):
    """f(z; x) = tanh(W z + U x + c), kept contractive by a small W."""

    def __init__(self, dim=6, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(0.3 * torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim ** 0.5)
        self.U = nn.Parameter(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        self.c = nn.Parameter(torch.randn(dim, generator=g, dtype=torch.float64))

    def forward(self, z, x):
        return torch.tanh(z @ self.W.T + x @ self.U.T + self.c)


# ------------------------------------------------------------------------------------------------
# Forward solvers
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_solvers_find_the_known_fixed_point(solver):
    f, z_star = contraction()
    z, stats = SOLVERS[solver](f, torch.zeros_like(z_star), max_iter=1000, tol=1e-10)
    torch.testing.assert_close(z, z_star, rtol=1e-8, atol=1e-8)
    assert stats.abs_lowest.max() < 1e-10 and stats.n_iter < 1000


def test_anderson_needs_fewer_iterations_than_plain_iteration():
    f, z_star = contraction()
    z0 = torch.zeros_like(z_star)
    _, fp = fixed_point_iter(f, z0, max_iter=500, tol=1e-8)
    _, aa = anderson(f, z0, max_iter=500, tol=1e-8, m=5, lam=1e-8)
    assert aa.n_iter < fp.n_iter / 3, (aa.n_iter, fp.n_iter)


def test_one_anderson_step_is_one_plain_step():
    f, z_star = contraction()
    z0 = torch.randn_like(z_star)
    torch.testing.assert_close(anderson(f, z0, max_iter=1)[0], f(z0))


def test_zero_iterations_return_z0():
    f, z_star = contraction()
    z0 = torch.randn_like(z_star)
    z, stats = fixed_point_iter(f, z0, max_iter=0)
    assert z is z0 and stats.n_iter == 0 and torch.all(stats.nstep == 0)


def test_lowest_residual_iterate_is_kept_per_sample():
    """Sample 0's residual falls then rises (best at step 2); sample 1's ends lowest (step 4)."""
    scales = iter([1.0, 0.5, 0.3, 3.0, 0.8, 0.4, 0.9, 0.05])
    residual_size = {}

    def f(z):
        s0, s1 = next(scales), next(scales)
        step = torch.stack([torch.full((3,), s0), torch.full((3,), s1)]).double()
        residual_size[len(residual_size) + 1] = step
        return z + step / 3 ** 0.5  # residual norm = s

    z0 = torch.zeros(2, 3, dtype=torch.float64)
    z, stats = fixed_point_iter(f, z0, max_iter=4, tol=0.0)
    assert stats.nstep.tolist() == [2, 4]
    torch.testing.assert_close(stats.abs_lowest, torch.tensor([0.3, 0.05]))
    torch.testing.assert_close(stats.abs_trace[:, 0], torch.tensor([1.0, 0.3, 0.8, 0.9]))
    # sample 0 returns f(z_1) = z0 + steps 1 and 2 (not the last iterate); sample 1 f(z_3)
    torch.testing.assert_close(z[0], (residual_size[1][0] + residual_size[2][0]) / 3 ** 0.5)
    torch.testing.assert_close(z[1], sum(residual_size[k][1] for k in (1, 2, 3, 4)) / 3 ** 0.5)


def test_batch_stops_when_every_sample_is_below_tol_and_per_sample_stop_freezes():
    # per-sample contraction factors 0.1 and 0.8: sample 0 converges long before sample 1
    rate = torch.tensor([[0.1], [0.8]], dtype=torch.float64)
    f = lambda z: rate * z  # noqa: E731
    z0 = torch.ones(2, 4, dtype=torch.float64)
    z, stats = fixed_point_iter(f, z0, max_iter=100, tol=1e-3)
    frozen, fstats = fixed_point_iter(f, z0, max_iter=100, tol=1e-3, per_sample_stop=True)
    assert stats.n_iter == fstats.n_iter and stats.abs_trace[-1].max() < 1e-3
    assert stats.nstep.tolist() == [stats.n_iter, stats.n_iter]      # the paper's rule keeps improving
    assert fstats.nstep[0] < fstats.nstep[1] == fstats.n_iter        # sample 0 froze at its first hit
    assert fstats.abs_lowest[0] < 1e-3
    # frozen results do not depend on the batch: sample 0 alone gives the same answer
    f0 = lambda z: 0.1 * z  # noqa: E731
    alone, _ = fixed_point_iter(f0, z0[:1], max_iter=100, tol=1e-3, per_sample_stop=True)
    torch.testing.assert_close(frozen[:1], alone)


@pytest.mark.parametrize("stop_mode", ["abs", "rel"])
def test_fixed_point_iteration_and_its_selection_match_torchdeq(stop_mode):
    """A map whose residuals rise and fall per sample, so the lowest iterate is not the last."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 5, 5, generator=g) * 0.9   # not contractive: residuals wander
    b = torch.randn(3, 5, generator=g)
    f = lambda z: torch.tanh((W @ z.unsqueeze(-1)).squeeze(-1) + b) * 3  # noqa: E731
    z0 = torch.randn(3, 5, generator=g)
    ours, stats = fixed_point_iter(f, z0, max_iter=12, tol=1e-6, stop_mode=stop_mode)
    theirs, _, info = get_solver("fixed_point_iter")(f, z0, max_iter=12, tol=1e-6, stop_mode=stop_mode)
    assert stats.nstep.tolist() == info["nstep"].long().tolist() and (stats.nstep < 12).any()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(getattr(stats, f"{stop_mode}_lowest"), info[f"{stop_mode}_lowest"])


@pytest.mark.parametrize("n", [3, 5, 12])
def test_anderson_iterates_match_torchdeq(n):
    """With a negligible Tikhonov term the two are the same algorithm, iterate for iterate."""
    f, z_star = contraction()
    z0 = torch.randn_like(z_star)
    ours, stats = anderson(f, z0, max_iter=n, tol=0.0, m=5, lam=1e-14)
    theirs, _, info = get_solver("anderson")(f, z0, max_iter=n, tol=0.0, m=5, lam=1e-14)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
    assert stats.nstep.tolist() == info["nstep"].long().tolist()


def test_return_final_keeps_the_last_iterate_as_torchdeq_does():
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(3, 5, 5, generator=g) * 0.9, torch.randn(3, 5, generator=g)
    f = lambda z: torch.tanh((W @ z.unsqueeze(-1)).squeeze(-1) + b) * 3  # noqa: E731
    z0 = torch.randn(3, 5, generator=g)
    ours, stats = fixed_point_iter(f, z0, max_iter=7, tol=1e9, return_final=True)  # no early stop either
    theirs, _, _ = get_solver("fixed_point_iter")(f, z0, max_iter=7, tol=1e9, return_final=True)
    last = z0
    for _ in range(7):
        last = f(last)
    torch.testing.assert_close(ours, last)
    torch.testing.assert_close(ours, theirs)
    assert stats.n_iter == 7 and stats.nstep.tolist() == [7, 7, 7]
    z, _ = anderson(f, z0, max_iter=1, return_final=True)
    torch.testing.assert_close(z, f(z0))


def test_anderson_regularisation_is_relative():
    """torchdeq's absolute lam swamps tiny residuals and stalls; ours is scaled by them."""
    f, z_star = contraction()
    z0 = torch.zeros_like(z_star)
    ours, stats = anderson(f, z0, max_iter=200, tol=1e-9, m=5, lam=1e-4)
    _, _, info = get_solver("anderson")(f, z0, max_iter=200, tol=1e-9, m=5, lam=1e-4)
    torch.testing.assert_close(ours, z_star, rtol=1e-8, atol=1e-8)
    assert stats.n_iter < 100 < info["nstep"].max()


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_solvers_keep_the_state_dtype_under_autocast(solver):
    lin = nn.Linear(8, 8)
    seen = []

    def f(z):
        seen.append(z.dtype)
        return z + 0.1 * torch.tanh(lin(z)).float()

    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, _ = SOLVERS[solver](f, torch.randn(4, 8), max_iter=5, tol=0.0)
    assert z.dtype == torch.float32 and set(seen) == {torch.float32}


# ------------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------------

def fixed_point_loss_by_finite_differences(layer, x, target, eps=1e-6):
    """d/dtheta of ||z*(theta) - target||^2 by central differences, z* solved to 1e-13."""
    def loss():
        with torch.no_grad():
            z, _ = fixed_point_iter(lambda z: layer(z, x), torch.zeros_like(x), max_iter=500, tol=1e-13)
            return ((z - target) ** 2).sum()
    grads = []
    for p in layer.parameters():
        g = torch.zeros_like(p)
        for i in range(p.numel()):
            orig = p.data.view(-1)[i].item()
            p.data.view(-1)[i] = orig + eps
            up = loss()
            p.data.view(-1)[i] = orig - eps
            down = loss()
            p.data.view(-1)[i] = orig
            g.view(-1)[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def grads_of(layer, x, target, cfg):
    layer.zero_grad()
    states, _ = solve_deq(lambda z: layer(z, x), torch.zeros_like(x), cfg, training=True)
    ((states[-1] - target) ** 2).sum().backward()
    return [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize("cfg", [
    DEQConfig(f_max_iter=200, f_tol=1e-13, grad="implicit", b_max_iter=200, b_tol=1e-13),
    DEQConfig(f_max_iter=200, f_tol=1e-13, grad="implicit", b_solver="anderson", b_max_iter=60, b_tol=1e-13),
    DEQConfig(f_max_iter=0, grad="unrolled", grad_steps=80),  # a long unroll from z0 = 0
], ids=["implicit-fixed-point", "implicit-anderson", "long-unroll"])
def test_gradients_match_finite_differences(cfg):
    layer = SmallDEQLayer()
    g = torch.Generator().manual_seed(1)
    x, target = torch.randn(3, 6, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64)
    fd = fixed_point_loss_by_finite_differences(layer, x, target)
    for ours, ref in zip(grads_of(layer, x, target, cfg), fd):
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-8)


def torchdeq_grads(layer, x, target, **deq_args):
    layer.zero_grad()
    deq = get_deq(**deq_args)
    z_out, _ = deq(lambda z: layer(z, x), torch.zeros_like(x))
    ((z_out[-1] - target) ** 2).sum().backward()
    return z_out, [p.grad.clone() for p in layer.parameters()]


def test_implicit_gradient_and_fixed_point_agree_with_torchdeq():
    layer = SmallDEQLayer(seed=3)
    x, target = torch.randn(2, 6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    cfg = DEQConfig(f_max_iter=60, f_tol=1e-12, grad="implicit", b_max_iter=60, b_tol=1e-12)
    layer.train()
    states, _ = solve_deq(lambda z: layer(z, x), torch.zeros_like(x), cfg, training=True)
    ours = grads_of(layer, x, target, cfg)
    z_out, theirs = torchdeq_grads(layer, x, target, ift=True, f_max_iter=60, f_tol=1e-12,
                                   b_max_iter=60, b_tol=1e-12)
    torch.testing.assert_close(states[-1], z_out[-1], rtol=1e-10, atol=1e-10)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_paper_recipe_states_and_gradients_agree_with_torchdeq():
    """f_max_iter 0 + 6-step phantom gradient, tau 1, sup_gap 1: the released training recipe."""
    layer = SmallDEQLayer(seed=4)
    x, target = torch.randn(2, 6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    z0 = torch.randn(2, 6, dtype=torch.float64)
    ours, _ = solve_deq(lambda z: layer(z, x), z0, DEQConfig(), training=True)
    deq = get_deq(f_max_iter=0, grad=6, sup_gap=1, tau=1.0)
    theirs, _ = deq(lambda z: layer(z, x), z0)
    assert len(ours) == len(theirs) == 6
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    loss = lambda states: fp_correction(lambda p, t: ((p - t) ** 2).sum(), states, target)[0]  # noqa: E731
    g_ours = torch.autograd.grad(loss(ours), list(layer.parameters()))
    g_theirs = torch.autograd.grad(loss(theirs), list(layer.parameters()))
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b)


def test_phantom_gradient_damping_and_supervision():
    f = lambda z: 2 * z + 1  # noqa: E731
    z0 = torch.zeros(1, 1)
    states = phantom_grad(f, z0, steps=4, tau=0.5, sup_gap=2)
    # z <- 0.5 (2z + 1) + 0.5 z = 1.5 z + 0.5: 0.5, 1.25, 2.375, 4.0625; keep steps 2 and 4
    assert [s.item() for s in states] == [1.25, 4.0625]
    assert len(phantom_grad(f, z0, steps=5, sup_gap=2)) == 3  # steps 2, 4 and the last


def test_implicit_gradient_leaves_forward_values_alone():
    layer = SmallDEQLayer()
    x = torch.randn(2, 6, dtype=torch.float64)
    z_star, _ = fixed_point_iter(lambda z: layer(z, x), torch.zeros_like(x), max_iter=200, tol=1e-12)
    (fz,) = implicit_grad(lambda z: layer(z, x), z_star, lambda g_map, init: fixed_point_iter(g_map, init))
    torch.testing.assert_close(fz, z_star, rtol=1e-10, atol=1e-10)


def test_eval_solve_runs_without_autograd():
    layer = SmallDEQLayer()
    x = torch.randn(2, 6, dtype=torch.float64)
    (z,), stats = solve_deq(lambda z: layer(z, x), torch.zeros_like(x), DEQConfig(), training=False)
    assert not z.requires_grad and stats.n_iter <= 6


# ------------------------------------------------------------------------------------------------
# Fixed-point correction and configuration
# ------------------------------------------------------------------------------------------------

def test_fixed_point_correction_weights_are_the_papers():
    assert fp_correction_weights(6) == pytest.approx([0.32768, 0.4096, 0.512, 0.64, 0.8, 1.0])
    preds = [torch.full((2,), float(k)) for k in range(1, 7)]
    total, per_state = fp_correction(lambda p, t: (p - t).abs().mean(), preds, torch.zeros(2))
    assert [l.item() for l in per_state] == [1, 2, 3, 4, 5, 6]
    assert total.item() == pytest.approx(sum(w * k for w, k in zip(fp_correction_weights(6), range(1, 7))))
    single, _ = fp_correction(lambda p, t: (p - t).abs().mean(), torch.ones(2), torch.zeros(2))
    assert single.item() == 1.0


def test_default_config_is_the_paper_recipe():
    cfg = DEQConfig()
    assert (cfg.f_max_iter, cfg.grad, cfg.grad_steps, cfg.tau, cfg.sup_gap) == (0, "phantom", 6, 1.0, 1)
    assert (cfg.eval_f_solver, cfg.eval_f_max_iter, cfg.eval_f_tol) == ("fixed_point_iter", 6, 1e-3)


@pytest.mark.parametrize("bad, match", [
    (dict(f_solver="broyden"), "unknown DEQ solver f_solver='broyden'"),
    (dict(grad_steps="6"), "DEQ setting grad_steps must be an integer, got '6'"),
    (dict(tau=0.0), "tau .* must be > 0"),
    (dict(grad="implicit"), "set f_max_iter > 0"),
    (dict(f_tol=-1e-3), "f_tol must be >= 0"),
    (dict(grad="jfb"), "unknown DEQ gradient grad='jfb'"),
    (dict(grad_steps=0), "grad_steps must be >= 1"),
    (dict(eval_f_max_iter=-1), "eval_f_max_iter must be >= 0"),
    (dict(max_iter=3), r"unknown DEQ setting\(s\) \['max_iter'\]"),
])
def test_bad_settings_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        DEQConfig.from_dict(bad)


def test_named_recipes_are_presets_of_the_defaults():
    from getlib.settings import DEQ_RECIPES, recipe_of
    assert DEQConfig.from_dict({"recipe": "paper"}) == DEQConfig() and recipe_of(DEQConfig()) == "paper"
    truncated = DEQConfig.from_dict({"recipe": "truncated"})
    assert (truncated.f_max_iter, truncated.grad_steps, truncated.return_final) == (5, 1, True)
    assert DEQConfig.from_dict({"recipe": "bptt-last"}).sup_gap == 6
    for name in DEQ_RECIPES:
        assert recipe_of(DEQConfig.from_dict({"recipe": name})) == name
        assert recipe_of(DEQConfig.from_dict({"recipe": name, "state_norm": True})) == name + "+state-norm"
    assert recipe_of(DEQConfig.from_dict({"recipe": "truncated", "f_max_iter": 4})) == "custom"
    # evaluation-only and memory settings do not change which recipe it is
    assert recipe_of(DEQConfig.from_dict({"recipe": "truncated", "memory_efficient": True, "eval_f_tol": 0.0})) \
        == "truncated"
    with pytest.raises(ValueError, match="unknown DEQ recipe 'papr'"):
        DEQConfig.from_dict({"recipe": "papr"})
