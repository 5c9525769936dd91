"""What the notebooks show of each stage's objects (getlib.views)."""
import pytest
import torch

from getlib.views import data, distill, features, pairs, teacher
from getlib.data import Dataset, real_images, save_dataset
from getlib.edm import SamplerConfig, edm_sampler, latents_for_seeds
from getlib.models import GET_models, ViT_models, count_params
from getlib.pairs import PairSpec, generate_pairs, read_manifest

DIGITS = dict(input_size=8, in_channels=1)


def test_class_counts_and_images_by_class(tmp_path):
    save_dataset(real_images("digits", 450), tmp_path / "d.npz")
    ds = Dataset(tmp_path / "d.npz")
    counts = data.class_counts(ds)
    assert sum(c["train"] for c in counts) == 1347 and sum(c["held_out"] for c in counts) == 450
    grid = data.images_by_class(ds, per_class=3)
    assert grid.shape == (30, 1, 8, 8) and torch.equal(grid[3], ds.train_images[ds.train_labels == 1][0])

    class Oracle(torch.nn.Module):   # predicts the true class: a diagonal confusion matrix
        def forward(self, x):
            return torch.nn.functional.one_hot(ds.held_labels, 10).float()
    m = features.confusion_matrix(Oracle(), ds)
    assert m.trace() == 450 and m.sum() == 450


def test_heun_trajectory_is_the_samplers_own_run():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    denoise = lambda x, sigma, labels: net(x.float()).double() * 0.5 + x * 0.5 / (1 + sigma)  # noqa: E731
    sampler = SamplerConfig(num_steps=5)
    rows = teacher.heun_trajectory(denoise, [3, 4], (1, 8, 8), sampler)
    latents, _ = latents_for_seeds([3, 4], (1, 8, 8))
    assert [r["step"] for r in rows] == list(range(6)) and rows[0]["sigma"] == 80.0 and rows[-1]["sigma"] == 0.0
    assert [r["sigma"] for r in rows[:-1]] == teacher.sigma_schedule(sampler)[:-1]
    assert torch.allclose(rows[0]["state"], latents * 80.0)
    labelled = teacher.heun_trajectory(lambda x, s, y: x * 0 + y.view(-1, 1, 1, 1), [3, 4], (1, 8, 8), sampler, 10)
    assert torch.equal(labelled[-1]["denoised"][:, 0, 0, 0], latents_for_seeds([3, 4], (1, 8, 8), 10)[1].float())
    with torch.no_grad():
        assert torch.equal(rows[-1]["state"], edm_sampler(denoise, latents, None, 5).float())


def test_shard_check_finds_a_changed_shard(tmp_path):
    spec = PairSpec(num_pairs=8, image_shape=(1, 8, 8), shard_size=4, batch_size=4)
    generate_pairs(lambda x, s, y: x * 0, tmp_path / "p", spec, {"kind": "test"}, SamplerConfig(num_steps=2))
    manifest = read_manifest(tmp_path / "p")
    assert [r["count"] for r in pairs.shard_table(manifest)] == [4, 4]
    assert pairs.check_shard(tmp_path / "p", manifest, 1)["matches"]
    with open(tmp_path / "p" / manifest["shards"][1]["file"], "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")
    assert not pairs.check_shard(tmp_path / "p", manifest, 1)["matches"]


def test_parameter_parts_add_up():
    for model in (GET_models["GET-P/2"](**DIGITS), ViT_models["ViT-P/2"](**DIGITS)):
        parts = distill.parameter_parts(model)
        assert sum(v for k, v in parts.items() if k != "total") == parts["total"] == count_params(model)


def test_solver_trace_and_training_states():
    torch.manual_seed(0)
    model = GET_models["GET-P/2"](**DIGITS)
    with torch.no_grad():
        model.final_layer.linear.weight.normal_(0, 0.05)
    trace = distill.solver_trace(model, [1, 2, 3], iterations=4)
    assert len(trace["abs_residual"]) == 4 and trace["images"].shape == (3, 1, 8, 8)
    states, weights = distill.training_states(model, [1, 2])
    assert len(states) == 6 and weights == [0.8 ** (5 - k) for k in range(6)] and not model.training


def test_samples_are_the_evaluations_and_trajectory_rows_stack_two_rows():
    from getlib.evaluate import sample_student
    from getlib.images import to_uint8
    torch.manual_seed(0)
    for model in (GET_models["GET-P/2"](**DIGITS), ViT_models["ViT-P/2"](**DIGITS)):
        with torch.no_grad():
            model.final_layer.linear.weight.normal_(0, 0.05)
        assert torch.equal(to_uint8(distill.samples(model, [5, 6, 7])), sample_student(model, 3, 5)[0])
    trajectory = [{"sigma": s, "state": torch.full((2, 1, 8, 8), 3.0), "denoised": torch.zeros(2, 1, 8, 8)}
                  for s in (80.0, 1.0, 0.0)]
    rows = teacher.trajectory_rows(trajectory, sample=1)
    assert rows.shape == (6, 1, 8, 8) and rows[0].max() == pytest.approx(3 * 0.5 / (80 ** 2 + 0.25) ** 0.5)
    assert rows[2].max() == 1   # at sigma 0 the state is the image itself (clamped to the data's range)


# ------------------------------------------------------------------------------------------------
# Text from the settings, tables and grids as every notebook shows them
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("recipe, states, nfe", [("paper", 6, 6), ("truncated", 1, 6), ("bptt-last", 1, 6)])
def test_the_recipe_description_says_what_the_model_does(recipe, states, nfe):
    """The Markdown that 05_distill shows for a student comes from its settings and agrees with the
    model those settings build: as many supervised states, the same weights, and the NFE the
    evaluation reports for a GET (its deq_cfg.eval_f_max_iter)."""
    from getlib.deq import fp_correction_weights
    from getlib.settings import DEQConfig, TrainConfig, recipe_of
    cfg = TrainConfig(model="GET-P/2", deq={"recipe": recipe}, gamma=0.8)
    text = distill.recipe_markdown(cfg, "get-p")
    model = GET_models["GET-P/2"](**DIGITS, deq=cfg.deq)
    got, weights = distill.training_states(model, [1, 2], cfg.gamma)
    assert len(got) == states and len(distill.supervised_steps(DEQConfig.from_dict(cfg.deq))) == states
    assert f"`{recipe_of(model.deq_cfg)}`" in text and f"NFE {model.deq_cfg.eval_f_max_iter}" in text
    assert model.deq_cfg.eval_f_max_iter == nfe
    if states == 1:
        assert "one state, z_6, with weight 1" in text and weights == [1.0]
    else:
        assert f"{states} states, z_1, z_2, z_3, z_4, z_5, z_6" in text
        assert ", ".join(f"{w:.3g}" for w in fp_correction_weights(states, 0.8)) in text
    no_grad = model.deq_cfg.f_max_iter
    assert (f"{no_grad} iterations of f (fixed_point_iter, all of them run) from z0 without autograd" in text) == (
        recipe == "truncated")
    assert ("No iterations without autograd" in text) == (recipe != "truncated")
    assert ("decoding the last iterate" in text) == (recipe == "truncated")
    state_norm = distill.recipe_markdown(TrainConfig(model="GET-P/2", deq={"recipe": recipe, "state_norm": True}))
    assert "+state-norm`" in state_norm and "LayerNorm" in state_norm and "LayerNorm" not in text


def test_a_vits_description_and_the_samplers_come_from_their_settings():
    from getlib.settings import TrainConfig
    assert "is a ViT" in distill.recipe_markdown(TrainConfig(model="ViT-P/2", loss="l2"), "vit-p")
    assert "(NFE 1)" in distill.recipe_markdown(TrainConfig(model="ViT-P/2"))
    heun = teacher.sampler_markdown(SamplerConfig(num_steps=18))
    assert "18 steps" in heun and "35 evaluations per image" in heun and "t_18 = 0" in heun
    euler = teacher.sampler_markdown(SamplerConfig(num_steps=4, solver="euler"))
    assert "4 evaluations per image" in euler and "i/3" in euler


def test_a_shown_table_has_dashes_where_nothing_applies_and_keeps_the_rows():
    import math

    import pandas as pd

    from getlib.io import cell_text
    from getlib.views.show import table
    rows = [{"source": "real", "fid": 15.286274, "params": None, "kid": float("nan")},
            {"source": "get-p", "fid": 22.0, "params": 288516, "recipe": "truncated", "kid": 0.0057921}]
    shown = table(rows, index="source")
    assert list(shown.columns) == ["fid", "params", "kid", "recipe"] and list(shown.index) == ["real", "get-p"]
    assert shown.loc["real"].tolist() == ["15.29", "-", "-", "-"]
    assert shown.loc["get-p"].tolist() == ["22", "288516", "0.005792", "truncated"]
    assert rows[0]["params"] is None and math.isnan(rows[0]["kid"])   # the rows themselves are left as they were
    renamed = table(rows, ["source", "kid"], {"kid": "KID"})
    assert list(renamed.columns) == ["source", "KID"] and renamed["KID"].tolist() == ["-", "0.005792"]
    frame = pd.DataFrame(rows).set_index("source")   # pandas: None -> NaN, the integers made floats
    assert "NaN" in frame.to_html() and "nan" not in table(frame).to_html().lower()
    assert table(frame)["params"].tolist() == ["-", "288516"]
    assert [cell_text(v) for v in (None, float("nan"), 1.23456, 7, "x", True)] == ["-", "-", "1.235", "7", "x", "True"]


def test_a_shown_grid_makes_a_small_image_readable():
    from getlib.views.show import TILE_PIXELS, grid
    small = grid(torch.zeros(16, 1, 8, 8), nrow=8)
    assert small.size[0] >= 8 * TILE_PIXELS and small.size[1] >= 2 * TILE_PIXELS
    assert grid(torch.zeros(4, 3, 32, 32), nrow=2).size[0] >= 2 * TILE_PIXELS
