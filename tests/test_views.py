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
