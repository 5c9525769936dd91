"""GET and ViT: exact sizes, the paper's architecture details, calling convention, released weights."""
import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from getlib.deq import fp_correction
from getlib.models import (GET_models, ViT_models, build_model, count_params, load_released,
                           sincos_pos_embed_2d)
from reference import reference_get

DIGITS = dict(input_size=8, in_channels=1)

# docs/paper.md, "The GET architecture"
PAPER_GET_PARAMS = {
    "GET-T/2": (256, 8_558_092),
    "GET-M/2": (384, 19_177_740),
    "GET-S/2": (512, 37_173_260),
    "GET-B/2": (768, 62_207_244),
    "GET-B/2+": (768, 83_481_612),
}
# docs/paper.md: ViT-S ~21.4M, ViT-B ~85.3M, ViT-L ~302.6M, ViT-XL ~446.7M (patch 2)
PAPER_VIT_PARAMS_M = {"ViT-S/2": 21.4, "ViT-B/2": 85.3, "ViT-L/2": 302.6, "ViT-XL/2": 446.7}


def on_meta(fn, **kw):
    with torch.device("meta"):
        return fn(**kw)


def perturbed(model, std=0.05, seed=0):
    """Random weights everywhere (the zero-initialised decoder would hide most of the network)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


# ------------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PAPER_GET_PARAMS))
def test_get_param_counts_are_the_papers(name):
    dim, expected = PAPER_GET_PARAMS[name]
    assert count_params(on_meta(GET_models[name])) == expected
    assert count_params(on_meta(GET_models[name], cond=True)) == expected + 10 * 3 * dim
    assert count_params(on_meta(GET_models[name], cond=True, num_classes=100)) == expected + 100 * 3 * dim


def vit_formula(dim, depth, patch, channels=3, size=32):
    """Hand count: per block 2 LayerNorms (4D) + qkv (3D^2+3D) + proj (D^2+D) + MLP x4 (8D^2+5D)."""
    tokens = (size // patch) ** 2
    blocks = depth * (12 * dim * dim + 13 * dim)
    embed = channels * patch * patch * dim + dim + tokens * dim
    decoder = 2 * dim + dim * patch * patch * channels + patch * patch * channels
    return blocks + embed + decoder


@pytest.mark.parametrize("name", sorted(n for n in ViT_models if n.split("-")[1][0] in "SBLX"))
def test_vit_param_counts(name):
    model = on_meta(ViT_models[name])
    assert count_params(model) == vit_formula(model.hidden_size, len(model.blocks), model.patch_size)
    if name in PAPER_VIT_PARAMS_M:
        assert round(count_params(model) / 1e6, 1) == PAPER_VIT_PARAMS_M[name]
    assert count_params(on_meta(ViT_models[name], cond=True)) == count_params(model) + 30 * model.hidden_size


def test_vit_l_is_about_5x_get_b():
    ratio = count_params(on_meta(ViT_models["ViT-L/2"])) / count_params(on_meta(GET_models["GET-B/2"]))
    assert 4.8 < ratio < 5.0  # docs/paper.md: about 4.9x


def test_small_configs_take_the_digits_shape():
    get, vit = GET_models["GET-P/2"](**DIGITS), ViT_models["ViT-P/2"](**DIGITS)
    assert get.grid ** 2 == 16 and vit.grid ** 2 == 16
    assert abs(count_params(get) / count_params(vit) - 1) < 0.1  # matched sizes for the GET-vs-ViT table


# The patch-1 digits configs: GET-P/2's and ViT-P/2's blocks on 64 tokens of 1x1x1 patches.
# Hand count, D = 64, C = 1, patch p, T = (8 / p)^2 tokens; a block with MLP ratio 4 holds
# 2 LayerNorms (4D) + qkv (3D^2 + 3D) + proj (D^2 + D) + MLP (8D^2 + 5D) = 12D^2 + 13D = 49,984.
#   patch conv C p^2 D + D, positions T D, decoder LN 2D + Linear D p^2 C + p^2 C:
#     p = 2: 320 + 1,024 + 388 = 1,732;   p = 1: 128 + 4,096 + 193 = 4,417
#   GET: 2 injection blocks + qkv_inj (D x 3D x 3 equilibrium blocks, no bias: 9D^2 = 36,864)
#        + 3 equilibrium blocks = 5 x 49,984 + 36,864 = 286,784
#        -> GET-P/2 = 286,784 + 1,732 = 288,516;  GET-P/1 = 286,784 + 4,417 = 291,201
#   ViT: 6 blocks = 299,904 -> ViT-P/2 = 301,636;  ViT-P/1 = 299,904 + 4,417 = 304,321
#   ViT-U (D = 128): 6 blocks = 6 (12D^2 + 13D) = 1,189,632; p = 2: 640 + 2,048 + 772 = 3,460
#     -> ViT-U/2 = 1,193,092;  p = 1: 256 + 8,192 + 385 = 8,833 -> ViT-U/1 = 1,198,465
PATCH_1 = {"GET-P/1": ("GET-P/2", 291_201), "ViT-P/1": ("ViT-P/2", 304_321), "ViT-U/1": ("ViT-U/2", 1_198_465)}
PATCH_2 = {"GET-P/2": 288_516, "ViT-P/2": 301_636, "ViT-U/2": 1_193_092}


@pytest.mark.parametrize("name", list(PATCH_1))
def test_patch_1_configs_are_the_patch_2_blocks_on_64_tokens(name):
    twin, expected = PATCH_1[name]
    model, model2 = build_model(name, **DIGITS), build_model(twin, **DIGITS)
    assert count_params(model) == expected and count_params(model2) == PATCH_2[twin]
    assert model.grid ** 2 == 64 and model.patch_size == 1 and model2.grid ** 2 == 16
    if name.startswith("ViT"):
        assert count_params(model) == vit_formula(model.hidden_size, 6, 1, channels=1, size=8)
    # the same parameters but the patch embedding, the positions and the decoder
    differ = {"x_embedder.proj.weight", "pos_embed", "final_layer.linear.weight", "final_layer.linear.bias"}
    a, b = model.state_dict(), model2.state_dict()
    assert a.keys() == b.keys()
    assert {k for k in a if a[k].shape != b[k].shape} == differ
    noise = torch.randn(3, 1, 8, 8)
    perturbed(model)
    out = model.train()(noise)
    states = out if isinstance(out, list) else [out]
    assert len(states) == (6 if name.startswith("GET") else 1) and all(s.shape == noise.shape for s in states)
    with torch.no_grad():
        image = model.eval()(noise)
    assert image.shape == noise.shape and torch.isfinite(image).all()


def test_the_vit_at_get_p_sampling_flops_is_u_at_both_token_counts():
    """The equal-sampling-FLOPs pairing (claims: the ViT nearest GET in FLOPs per sample): among the
    digits ViTs of a patch size, ViT-U is nearest GET-P at 6 iterations, at 16 and at 64 tokens."""
    from getlib.evaluate import flops_per_sample
    cost = lambda name: flops_per_sample(build_model(name, **DIGITS).eval(), torch.zeros(1, 1, 8, 8))  # noqa: E731
    for patch in (2, 1):
        get = cost(f"GET-P/{patch}")
        vits = {name: cost(name) for name in ViT_models if name.endswith(f"/{patch}") and name[4] in "PNU"}
        assert min(vits, key=lambda name: abs(vits[name] - get)) == f"ViT-U/{patch}"
        assert 1 < vits[f"ViT-U/{patch}"] / get < 1.15


def test_patch_1_flops_and_attention_share_by_hand():
    """FLOPs per sample (2 per multiply-add, `flops_per_sample`) of the digits configs at 16 and 64
    tokens, and attention's share (QK^T and AV: 2 x 2 T^2 D per block call) of them."""
    from getlib.evaluate import attention_share, flops_per_sample
    D = 64
    for patch, T in ((2, 16), (1, 64)):
        P = patch * patch                                   # values per patch (1 channel)
        attention = 2 * 2 * T * T * D
        block = 2 * T * D * 3 * D + attention + 2 * T * D * D + 2 * T * D * 4 * D * 2
        ends = 2 * T * P * D + 2 * T * D * P                # patch conv + decoder
        hand = {f"ViT-P/{patch}": (6 * block + ends, 6 * attention),
                # sampling: 2 injection blocks, qkv_inj, then 6 evaluations of 3 equilibrium blocks
                f"GET-P/{patch}": ((2 + 18) * block + 2 * T * D * 9 * D + ends, 20 * attention)}
        for name, (flops, attn) in hand.items():
            model = build_model(name, **DIGITS).eval()
            assert flops_per_sample(model, torch.zeros(1, 1, 8, 8)) == flops
            assert attention_share(model) == {"flops": flops, "attention_flops": attn, "attention_share": attn / flops}
    assert round(attention_share(build_model("GET-P/2", **DIGITS))["attention_share"], 4) == 0.0386
    assert round(attention_share(build_model("GET-P/1", **DIGITS))["attention_share"], 4) == 0.1384


def test_attention_share_of_a_training_step_by_hand():
    """A one-block ViT (D = 8, 4 tokens of 2x2 patches): attention is 2 x 2 T^2 D forward and 2.5x
    that backward (torch's SDPA formula); the rest is test_evaluate's hand count of a training step."""
    from getlib.evaluate import attention_share, training_cost
    model = ViT_models["ViT-P/2"](input_size=4, in_channels=1, hidden_size=8, depth=1, num_heads=2)
    T, D, P = 4, 8, 4
    attention = 2 * 2 * T * T * D
    patch_conv = 2 * T * P * D
    forward = (patch_conv + 2 * T * D * 3 * D + attention + 2 * T * D * D + 2 * T * D * 4 * D * 2 + 2 * T * D * P)
    backward = 2 * (forward - patch_conv - attention) + patch_conv + 5 * attention // 2
    assert attention_share(model) == {"flops": forward, "attention_flops": attention,
                                      "attention_share": attention / forward}
    step = attention_share(model, training=True)
    assert step["flops"] == forward + backward == round(training_cost(model)["train_gflops_per_image"] * 1e9)
    assert step["attention_flops"] == attention + 5 * attention // 2
    assert all(p.grad is None for p in model.parameters())   # it counted on a copy


def test_build_model_names_unknown_models():
    with pytest.raises(ValueError, match="unknown model 'GET-X/2'.*GET-T/2"):
        build_model("GET-X/2")


# ------------------------------------------------------------------------------------------------
# Architecture details
# ------------------------------------------------------------------------------------------------

def test_sincos_positions_by_hand():
    dim, grid = 8, 3
    pe = sincos_pos_embed_2d(dim, grid)
    assert pe.shape == (9, 8)
    # token t = row * grid + col; channels [sin(col w), cos(col w), sin(row w), cos(row w)], w = (1, 1/100)
    row, col = 2, 1
    w = torch.tensor([1.0, 1 / 100.0], dtype=torch.float64)
    expected = torch.cat([torch.sin(col * w), torch.cos(col * w), torch.sin(row * w), torch.cos(row * w)])
    torch.testing.assert_close(pe[row * grid + col], expected.float())


def test_initialisation_is_the_papers():
    torch.manual_seed(0)
    model = GET_models["GET-T/2"](cond=True)
    assert not model.pos_embed.requires_grad
    torch.testing.assert_close(model.pos_embed[0], sincos_pos_embed_2d(256, 16))
    assert model.final_layer.linear.weight.abs().sum() == 0 and model.final_layer.linear.bias.abs().sum() == 0
    assert model.qkv_inj.bias is None and model.qkv_inj.weight.shape == (3 * 256 * 3, 256)
    qkv = model.deq_blocks[0].attn.qkv
    bound = math.sqrt(6 / (qkv.in_features + qkv.out_features))  # xavier-uniform
    assert qkv.weight.abs().max() <= bound and qkv.weight.abs().max() > 0.9 * bound
    assert qkv.bias.abs().sum() == 0
    conv = model.x_embedder.proj.weight
    assert conv.abs().max() <= math.sqrt(6 / (conv[0].numel() + conv.shape[0]))
    assert abs(model.y_embedder.embedding_table.weight.std().item() - 0.02) < 0.002
    norm = model.blocks[0].norm1
    assert norm.eps == 1e-6 and torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    assert [b.mlp.fc1.out_features for b in model.deq_blocks] == [6 * 256] * 3
    assert [b.mlp.fc1.out_features for b in model.blocks] == [4 * 256] * 6


def test_zero_decoder_gives_zero_images_at_init():
    model = GET_models["GET-P/2"](**DIGITS).eval()
    assert torch.all(model(torch.randn(2, 1, 8, 8)) == 0)


def test_attention_goes_through_sdpa(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = GET_models["GET-P/2"](**DIGITS).eval()
    model(torch.randn(1, 1, 8, 8), eval_f_max_iter=2, eval_f_tol=0.0)
    assert len(calls) == 2 + 2 * 3  # 2 injection blocks + 2 iterations of 3 equilibrium blocks


def test_injections_add_to_the_qkv_projection(monkeypatch):
    """Attention(x; c, u) attends with q, k, v = split(W_qkv x + b + c + u) (c: class, u: injection)."""
    from getlib.models import Attention
    torch.manual_seed(0)
    attn = Attention(16, 4)
    x, c, u = torch.randn(2, 5, 16), torch.randn(2, 1, 48), torch.randn(2, 5, 48)
    captured = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda q, k, v: captured.append((q, k, v)) or real(q, k, v))
    attn(x, c, u)
    want = (attn.qkv(x) + c + u).view(2, 5, 3, 4, 4).permute(2, 0, 3, 1, 4)  # (3, B, heads, T, D/heads)
    for got, expected in zip(captured[0], want):
        torch.testing.assert_close(got, expected)


def test_class_embedding_reaches_every_blocks_qkv():
    """The class table is shared by both parts: perturbing it changes every block's qkv input."""
    model = perturbed(GET_models["GET-P/2"](**DIGITS, cond=True))
    seen = []
    for blk in [*model.blocks, *model.deq_blocks]:
        blk.attn.register_forward_hook(lambda m, args, out: seen.append(args[1]))
    labels = torch.tensor([3, 7])
    model.eval()(torch.randn(2, 1, 8, 8), labels, eval_f_max_iter=1)
    expected = model.y_embedder.embedding_table.weight[labels].unsqueeze(1)
    assert len(seen) == 5 and all(torch.equal(c, expected) for c in seen)


# ------------------------------------------------------------------------------------------------
# Calling convention, seeds, validation
# ------------------------------------------------------------------------------------------------

def test_train_mode_returns_the_six_states_eval_one_image():
    model = perturbed(GET_models["GET-P/2"](**DIGITS))
    noise = torch.randn(3, 1, 8, 8)
    states = model.train()(noise)
    assert isinstance(states, list) and len(states) == 6 and all(s.shape == noise.shape for s in states)
    assert all(s.requires_grad for s in states)
    image, stats = model.eval()(noise, return_stats=True)
    assert image.shape == noise.shape and stats.n_iter == 6 and stats.abs_trace.shape == (6, 3)
    assert not image.requires_grad  # sampling runs without autograd


def test_same_seed_same_samples():
    model = perturbed(GET_models["GET-P/2"](**DIGITS)).eval()
    noise = torch.randn(4, 1, 8, 8)
    a = model(noise, generator=torch.Generator().manual_seed(7))
    b = model(noise, generator=torch.Generator().manual_seed(7))
    c = model(noise, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    z0 = model.initial_state(4, noise, torch.Generator().manual_seed(7))
    assert torch.equal(model(noise, z0=z0), a)


def test_test_time_iterations_are_a_knob():
    model = perturbed(GET_models["GET-P/2"](**DIGITS), std=0.02).eval()
    noise, z0 = torch.randn(2, 1, 8, 8), torch.randn(2, 16, 64)
    _, s3 = model(noise, z0=z0, eval_f_max_iter=3, eval_f_tol=0.0, return_stats=True)
    _, s12 = model(noise, z0=z0, eval_f_max_iter=12, eval_f_tol=0.0, return_stats=True,
                   eval_f_solver="anderson")
    assert s3.n_iter == 3 and s12.n_iter == 12
    with pytest.raises(ValueError, match="unknown DEQ setting.*max_iters"):
        model(noise, max_iters=3)


@pytest.mark.parametrize("bad, match", [
    (dict(noise=torch.randn(2, 3, 8, 8)), r"expects noise of shape \(B, 1, 8, 8\), got \(2, 3, 8, 8\)"),
    (dict(noise=torch.randn(2, 1, 8, 8), class_labels=torch.tensor([1, 2])), "unconditional"),
    (dict(noise=torch.randn(2, 1, 8, 8), z0=torch.randn(2, 16, 32)), "z0 must have the token shape"),
])
def test_bad_inputs_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        GET_models["GET-P/2"](**DIGITS).eval()(**bad)


@pytest.mark.parametrize("labels, match", [
    (None, "class-conditional: pass class_labels"),
    (torch.tensor([0, 10]), r"lie in \[0, 10\)"),
    (torch.tensor([0.0, 1.0]), "integers"),
])
def test_bad_labels_are_named(labels, match):
    with pytest.raises(ValueError, match=match):
        ViT_models["ViT-P/2"](**DIGITS, cond=True)(torch.randn(2, 1, 8, 8), labels)


@pytest.mark.parametrize("name", ["GET-P/2", "ViT-P/2"])
def test_class_conditional_models_train_one_step_and_sample(name):
    torch.manual_seed(0)
    model = build_model(name, **DIGITS, cond=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0)
    noise, labels, target = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)), torch.rand(8, 1, 8, 8)
    before = model.y_embedder.embedding_table.weight.clone()
    model.train()
    for _ in range(2):  # the decoder starts at zero: the second step reaches the class table
        loss, _ = fp_correction(lambda a, b: (a - b).abs().mean(), model(noise, labels), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(before, model.y_embedder.embedding_table.weight)
    with torch.no_grad():
        samples = model.eval()(noise, labels)
    assert samples.shape == noise.shape and torch.isfinite(samples).all() and samples.abs().sum() > 0


def test_memory_efficient_mode_gives_the_same_gradients(monkeypatch):
    import getlib.models
    calls = []
    real = getlib.models.checkpoint
    monkeypatch.setattr(getlib.models, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    base = perturbed(GET_models["GET-P/2"](**DIGITS, cond=True)).train()
    lean = GET_models["GET-P/2"](**DIGITS, cond=True, deq=dict(memory_efficient=True)).train()
    lean.load_state_dict(base.state_dict())
    noise, labels, z0, target = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), torch.randn(4, 16, 64), torch.rand(4, 1, 8, 8)
    for model in (base, lean):
        loss, _ = fp_correction(lambda a, b: (a - b).abs().mean(), model(noise, labels, z0), target)
        loss.backward()
    for (name, p), q in zip(base.named_parameters(), lean.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
    assert len(calls) == 6 * 3  # the lean model checkpointed every equilibrium block call


# ------------------------------------------------------------------------------------------------
# The authors' released checkpoints
# ------------------------------------------------------------------------------------------------

def save_release(path, model_name, cond=False, **kw):
    """A checkpoint in the release's layout: model/ema/opt state dicts and an argparse Namespace."""
    online = perturbed(build_model(model_name, cond=cond, **kw), seed=1)
    ema = perturbed(build_model(model_name, cond=cond, **kw), seed=2)
    opt = torch.optim.AdamW(online.parameters())
    args = argparse.Namespace(model=model_name, cond=cond, lr=1e-4, ema_decay=0.9999, mem=False)
    torch.save({"args": args, "model": online.state_dict(), "ema": ema.state_dict(),
                "opt": opt.state_dict()}, path)
    return online.state_dict(), ema.state_dict()


@pytest.mark.parametrize("cond", [False, True])
def test_released_checkpoint_gives_the_reference_images(tmp_path, cond):
    path = tmp_path / "release.pth"
    online_sd, ema_sd = save_release(path, "GET-T/2", cond=cond)
    model = load_released(path, "GET-T/2", cond=cond)
    assert not model.training
    noise, z0 = torch.randn(2, 3, 32, 32), torch.randn(2, 256, 256)
    labels = torch.tensor([3, 8]) if cond else None
    with torch.no_grad():
        ours = model(noise, labels, z0)
        theirs = reference_get(ema_sd, noise, heads=4, labels=labels, z0=z0)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-5)  # float32 round-off
        online = load_released(path, "GET-T/2", cond=cond, ema=False).train()
        states = online(noise, labels, z0)
        ref_states = reference_get(online_sd, noise, heads=4, labels=labels, z0=z0, train=True)
    for a, b in zip(states, ref_states, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)


def test_released_checkpoint_of_the_wrong_kind_is_refused(tmp_path):
    path = tmp_path / "cond.pth"
    save_release(path, "GET-P/2", cond=True, **DIGITS)
    with pytest.raises(ValueError, match="class-conditional checkpoint: pass cond=True"):
        load_released(path, "GET-P/2", **DIGITS)
    with pytest.raises(ValueError, match="wrong shape"):
        load_released(path, "GET-N/2", cond=True, **DIGITS)
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="expected the release layout.*'ema'.*found \\['state_dict'\\]"):
        load_released(tmp_path / "other.pth", "GET-P/2", **DIGITS)


def test_empty_checkpoint_is_refused(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pth: not a readable torch.save checkpoint"):
        load_released(tmp_path / "empty.pth", "GET-P/2", **DIGITS)


def test_truncated_or_missing_checkpoint_is_refused(tmp_path):
    path = tmp_path / "release.pth"
    save_release(path, "GET-P/2", **DIGITS)
    (tmp_path / "cut.pth").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="cut.pth: not a readable torch.save checkpoint"):
        load_released(tmp_path / "cut.pth", "GET-P/2", **DIGITS)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_released(tmp_path / "nothing.pth", "GET-P/2", **DIGITS)


def test_released_checkpoint_with_code_in_it_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pickled code ran",))
    torch.save({"args": Evil(), "model": {}, "ema": {}}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="objects other than tensors and plain values"):
        load_released(tmp_path / "evil.pth", "GET-P/2", **DIGITS)


# ------------------------------------------------------------------------------------------------
# The one z0 rule
# ------------------------------------------------------------------------------------------------

def test_z0_is_a_function_of_its_key_alone():
    from getlib.models import mix_seed, z0_for_keys
    shape = (16, 64)
    z = z0_for_keys([(3,), (4,), (0, 5, 2)], shape)
    assert torch.equal(z[1], z0_for_keys([(4,)], shape)[0])            # not of the batch it is in
    assert torch.equal(z[2], torch.randn(shape, generator=torch.Generator().manual_seed(mix_seed(0, 5, 2, 1))))
    assert not torch.equal(z[0], z[1])
    model = GET_models["GET-P/2"](**DIGITS)
    assert torch.equal(model.initial_states([4, 3]), torch.stack([z[1], z[0]]))   # a sample's key is its seed


def test_a_training_pairs_z0_is_the_one_training_always_drew():
    """Golden values: the z0 of training pair 100 at epoch 2 with seed 5, as the training loop drew it
    before the rule moved to models.py (a generator seeded with mix(5, 100, 2, 1))."""
    from getlib.models import mix_seed, z0_for_keys
    assert mix_seed(5, 100, 2, 1) == 7076289554783487811
    assert z0_for_keys([(5, 100, 2)], (2, 3)).flatten().tolist() == pytest.approx(
        [-1.2623406648635864, 0.9201449155807495, 2.035330295562744, -0.7511931657791138, 1.5082288980484009,
         1.9246488809585571], abs=0)


def test_a_samples_z0_is_not_its_latents_noise():
    """The latent of seed s is EDM's generator seeded s; z0 is drawn from another stream."""
    from getlib.edm import latents_for_seeds
    model = GET_models["GET-P/2"](**DIGITS)
    latents, _ = latents_for_seeds([7], (1, 8, 8))
    z0 = model.initial_states([7])
    first = torch.randn(z0.shape[1:], generator=torch.Generator().manual_seed(7))
    assert not torch.allclose(z0[0], first) and torch.equal(latents[0].flatten(), torch.randn(64, generator=torch.Generator().manual_seed(7)))


def test_sampling_and_training_draw_z0_by_the_rule():
    from getlib.evaluate import sample_student
    from getlib.images import to_uint8
    from getlib.edm import latents_for_seeds
    from getlib.models import z0_for_keys
    from getlib.batches import TrainingItems
    torch.manual_seed(0)
    model = GET_models["GET-P/2"](**DIGITS).eval()
    images, _ = sample_student(model, 3, seed_offset=10, batch_size=2)
    latents, _ = latents_for_seeds(range(10, 13), (1, 8, 8))
    with torch.no_grad():
        by_rule = to_uint8(model(latents, z0=model.initial_states(range(10, 13))))
    assert torch.equal(images, by_rule)

    class Pairs:   # the two PairDataset methods TrainingItems uses
        def batch(self, indices):
            return torch.zeros(len(indices), 1, 8, 8), torch.zeros(len(indices), 1, 8, 8), torch.zeros(len(indices))

        def global_indices(self, indices):
            return torch.tensor(indices) + 100

    *_, z0 = TrainingItems(Pairs(), (16, 64), seed=5).__getitems__([(0, 2), (3, 1)])
    assert torch.equal(z0, z0_for_keys([(5, 100, 2), (5, 103, 1)], (16, 64)))


def test_iterates_are_what_return_final_decodes():
    """GET.iterates runs the same map as sampling: iterate k decoded equals k iterations with return_final."""
    model = perturbed(GET_models["GET-P/2"](**DIGITS), std=0.02).eval()
    noise, z0 = torch.randn(2, 1, 8, 8), torch.randn(2, 16, 64)
    states = model.iterates(noise, None, z0, 4)
    assert len(states) == 5 and torch.equal(states[0], z0)
    for k in (1, 4):
        image = model(noise, z0=z0, eval_f_max_iter=k, eval_f_tol=0.0, return_final=True)
        assert torch.allclose(model.decode(states[k]), image, atol=1e-6)


def test_state_norm_bounds_the_state():
    """Without state_norm the state's norm grows by a nearly constant step; with it, every token of
    f(z) has mean 0 and unit variance whatever z is (so the iterates stay on a compact set)."""
    torch.manual_seed(0)
    plain = perturbed(GET_models["GET-P/2"](**DIGITS), std=0.02).eval()
    normed = GET_models["GET-P/2"](**DIGITS, deq={"state_norm": True}).eval()
    normed.load_state_dict(plain.state_dict())
    noise, z0 = torch.randn(2, 1, 8, 8), 100 * torch.randn(2, 16, 64)
    grows = [z.norm().item() for z in plain.iterates(noise, None, torch.randn(2, 16, 64), 6)]
    assert all(b > a for a, b in zip(grows[1:], grows[2:]))
    for z in normed.iterates(noise, None, z0, 3)[1:]:
        assert torch.allclose(z.mean(-1), torch.zeros(2, 16), atol=1e-5)
        assert torch.allclose(z.var(-1, unbiased=False), torch.ones(2, 16), atol=1e-4)
