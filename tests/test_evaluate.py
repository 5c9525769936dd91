"""Evaluation: FID/KID behave, the feature network learns, the Inception path is wired, costs add up."""
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import getlib.evaluate as ev
import getlib.metrics as metrics
from standins import stand_in_inception
from getlib.data import digits, split_indices
from getlib.edm import sample_teacher
from getlib.features import train_feature_net
from getlib.images import to_uint8
from getlib.io import write_results
from getlib.models import GET_models, ViT_models

DIGITS = dict(input_size=8, in_channels=1)


@pytest.fixture(scope="module")
def space_and_reference(tmp_path_factory):
    x, y = digits()
    train_idx, test_idx = split_indices(len(x), 450)
    net, report = train_feature_net(x, y, train_idx, test_idx, epochs=40)
    space = metrics.digits_feature_space(net)
    root = tmp_path_factory.mktemp("eval")
    reference = metrics.folder_features(metrics.write_images(to_uint8(x[train_idx]), root / "train"), space)
    return space, reference, report, x[test_idx], root


def test_feature_network_learns_the_digits(space_and_reference):
    _, reference, report, _, _ = space_and_reference
    assert report["held_out_accuracy"] > 0.95 and reference.shape == (1347, 128)


def test_fid_is_zero_on_itself_and_grows_with_noise(space_and_reference):
    space, reference, _, held_out, root = space_and_reference
    assert metrics.fid_kid(reference, reference)["fid"] == pytest.approx(0, abs=1e-6)
    scores = []
    for i, noise in enumerate([0.0, 0.3, 0.6, 1.2]):
        g = torch.Generator().manual_seed(i)
        noisy = (held_out + noise * torch.randn(held_out.shape, generator=g)).clamp(-1, 1)
        scores.append(metrics.score_images(to_uint8(noisy), reference, space, root / f"noise-{i}"))
    fids = [s["fid"] for s in scores]
    assert fids == sorted(fids) and fids[-1] > 10 * fids[0], fids
    assert scores[-1]["kid"] > scores[0]["kid"] and scores[0]["features"] == "digits-cnn"


def test_iteration_sweep_gives_a_finite_fid_for_each_count(space_and_reference):
    space, reference, _, _, root = space_and_reference
    torch.manual_seed(0)
    model = GET_models["GET-P/2"](**DIGITS)
    with torch.no_grad():
        model.final_layer.linear.weight.normal_(0, 0.05)
    rows = ev.iteration_sweep(model, reference, space, root / "sweep", n=64, iterations=(1, 2, 4),
                              solvers=("fixed_point_iter", "anderson"))
    assert [(r["solver"], r["iterations"]) for r in rows] == [
        ("fixed_point_iter", 1), ("fixed_point_iter", 2), ("fixed_point_iter", 4),
        ("anderson", 1), ("anderson", 2), ("anderson", 4)]
    assert all(np.isfinite(r["fid"]) and np.isfinite(r["rel_residual"]) for r in rows)
    assert rows[0]["fid"] == pytest.approx(rows[3]["fid"])  # one iteration: both solvers take f(z0)


def test_samples_depend_on_their_seeds_only():
    model = GET_models["GET-P/2"](**DIGITS, cond=True)
    with torch.no_grad():
        model.final_layer.linear.weight.normal_(0, 0.05)
    a, stats = ev.sample_student(model, 10, seed_offset=5, batch_size=10)
    b, _ = ev.sample_student(model, 10, seed_offset=5, batch_size=3)
    c, _ = ev.sample_student(model, 4, seed_offset=11, batch_size=4)
    assert a.dtype == torch.uint8 and torch.equal(a, b) and torch.equal(a[6:], c)
    assert len(stats["rel_residual_per_iteration"]) == 6
    teacher = sample_teacher(lambda x, s, c: torch.tanh(x), 6, (1, 8, 8), num_classes=10, seed_offset=2,
                                batch_size=4, sampler=ev.SamplerConfig(num_steps=3))
    assert teacher.shape == (6, 1, 8, 8) and teacher.dtype == torch.uint8


def test_flop_count_matches_a_hand_count():
    """ViT with one block, D = 8, 4 tokens of 2x2x1 patches: every matmul counted by hand."""
    model = ViT_models["ViT-P/2"](input_size=4, in_channels=1, hidden_size=8, depth=1, num_heads=2).eval()
    T, D, P = 4, 8, 4          # tokens, width, values per patch
    hand = (2 * T * P * D                      # patch conv
            + 2 * T * D * 3 * D                # qkv
            + 2 * 2 * T * T * D                # attention: QK^T and AV
            + 2 * T * D * D                    # attention output projection
            + 2 * T * D * 4 * D * 2            # MLP in and out
            + 2 * T * D * P)                   # decoder
    assert ev.flops_per_sample(model, torch.randn(1, 1, 4, 4)) == hand


def test_training_flops_are_forward_plus_backward_by_hand():
    """The model of the hand count above, one training step: every matmul's backward costs two
    matmuls, except the patch convolution (no gradient for its input, the noise: one) and attention
    (torch's formula: QK^T recomputed, then dV, dP, dQ, dK: five)."""
    model = ViT_models["ViT-P/2"](input_size=4, in_channels=1, hidden_size=8, depth=1, num_heads=2)
    forward = ev.flops_per_sample(model.eval(), torch.randn(1, 1, 4, 4))
    patch_conv, attention = 2 * 4 * 1 * 4 * 8, 2 * 2 * 4 * 4 * 8
    backward = 2 * (forward - patch_conv - attention) + patch_conv + 5 * attention // 2
    cost = ev.training_cost(model, "l1")
    assert cost["train_gflops_per_image"] * 1e9 == pytest.approx(forward + backward, rel=0, abs=0.5)
    get = GET_models["GET-P/2"](input_size=4, in_channels=1, hidden_size=8, depth=1, num_heads=2)
    cost = ev.training_cost(get, "l1")
    assert 0 < cost["activations_kib_per_image_memory_efficient"] < cost["activations_kib_per_image"]


def test_inception_path_says_where_to_put_the_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "INCEPTION_PATH", tmp_path / "inception-2015-12-05.pt")

    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(RuntimeError, match=r"Download that file .* put it at .*inception-2015-12-05.pt"):
        metrics.inception_feature_space("clean")
    assert not (tmp_path / "inception-2015-12-05.pt").exists()
    with pytest.raises(ValueError, match="'clean' or 'legacy_tensorflow'"):
        metrics.inception_feature_space("legacy_pytorch")


@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_inception_plumbing_with_a_stand_in_network(tmp_path, monkeypatch, mode):
    """Everything of the Inception path but the real weights: clean-fid's loader, resize, IS."""
    monkeypatch.setattr(metrics, "INCEPTION_PATH", tmp_path / "inception-2015-12-05.pt")
    stand_in_inception(metrics.INCEPTION_PATH)
    space = metrics.inception_feature_space(mode)
    folder = metrics.write_images(torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8), tmp_path / "imgs")
    feats = metrics.folder_features(folder, space)
    assert feats.shape == (12, 2048) and space.name == f"inception-{mode}"
    score = metrics.inception_score(folder, space, splits=3)
    assert score["n"] == 12 and 1.0 <= score["is"] <= 1008


def test_cifar10_reference_through_the_inception_road(tmp_path, monkeypatch):
    import pickle
    monkeypatch.setattr(metrics, "INCEPTION_PATH", tmp_path / "inception-2015-12-05.pt")
    stand_in_inception(metrics.INCEPTION_PATH)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": [0, 1, 2]}, f)
    space = metrics.inception_feature_space("clean")
    train = metrics.cifar10_reference(tmp_path / "data", "train", space, tmp_path / "work", check_md5=False)
    test = metrics.cifar10_reference(tmp_path / "data", "test", space, tmp_path / "work", check_md5=False)
    assert train.shape == (15, 2048) and test.shape == (3, 2048)
    again = metrics.cifar10_reference(tmp_path / "data", "train", space, tmp_path / "work", check_md5=False)  # reuses the folder
    np.testing.assert_array_equal(train, again)


@pytest.mark.skipif(not metrics.INCEPTION_PATH.exists(), reason="Inception weights not present (offline machine)")
def test_inception_fid_and_is_when_the_weights_are_present(tmp_path):
    space = metrics.inception_feature_space("clean")
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    folder = metrics.write_images(images, tmp_path / "a")
    feats = metrics.folder_features(folder, space)
    assert feats.shape == (20, 2048)
    score = metrics.inception_score(folder, space, splits=2)
    assert score["is"] >= 1.0


def test_inception_score_by_hand(tmp_path):
    """Black and white images, classified with certainty by brightness: p(y|x) is one-hot and p(y) is
    (1/2, 1/2) in every split, so IS = exp(log 2) = 2 exactly; one-image splits (which would score 1
    whatever the images) are avoided."""
    images = torch.zeros(12, 3, 8, 8, dtype=torch.uint8)
    images[1::2] = 255
    folder = metrics.write_images(images, tmp_path / "bw")
    space = metrics.FeatureSpace(name="brightness", extractor=lambda x: x.mean((2, 3)),
                            resize=lambda img: np.asarray(img, dtype=np.uint8),
                            class_probabilities=lambda x: F.one_hot((x.mean((1, 2, 3)) > 127).long(), 2).float())
    score = metrics.inception_score(folder, space, splits=6)
    assert score["splits"] == 6 and score["is"] == pytest.approx(2.0) and score["is_std"] == pytest.approx(0.0)
    assert metrics.inception_score(folder, space, splits=10)["splits"] == 6   # at most n / 2 splits
    same = metrics.write_images(torch.zeros(6, 3, 8, 8, dtype=torch.uint8), tmp_path / "black")
    assert metrics.inception_score(same, space)["is"] == pytest.approx(1.0)    # one class only: no diversity


def test_inception_score_needs_logits(space_and_reference, tmp_path):
    space, *_ = space_and_reference
    with pytest.raises(ValueError, match="Inception Score needs Inception"):  # the digits CNN has no classes
        metrics.inception_score(tmp_path, space)


def test_results_are_written_as_json_csv_and_markdown(tmp_path):
    rows = [{"model": "GET-P/2", "fid": 12.3456, "n": 2000}, {"model": "teacher", "fid": 1.5, "n": 2000}]
    write_results(rows, tmp_path, "table", "Title", note="FID: digits-cnn, 2000 vs 1347")
    import json
    assert json.loads((tmp_path / "table.json").read_text()) == rows
    assert (tmp_path / "table.csv").read_text().splitlines()[0] == "model,fid,n"
    md = (tmp_path / "table.md").read_text()
    assert "| GET-P/2 | 12.35 | 2000 |" in md and "digits-cnn, 2000 vs 1347" in md


def test_compare_scores_floor_teacher_and_students_with_the_same_counts(space_and_reference):
    space, reference, _, held_out, root = space_and_reference
    torch.manual_seed(0)
    students = {"GET-P/2": GET_models["GET-P/2"](**DIGITS), "ViT-P/2": ViT_models["ViT-P/2"](**DIGITS)}
    rows = ev.compare(students, lambda x, s, c: torch.tanh(x.float()), reference, to_uint8(held_out), space,
                      root / "compare", n=100, seeds=(0, 1), teacher_shape=(1, 8, 8),
                      sampler=ev.SamplerConfig(num_steps=2))
    assert [r["source"] for r in rows] == ["real (held-out)", "teacher", "GET-P/2", "ViT-P/2"]
    assert all(r["n"] == 100 and r["n_reference"] == 1347 and r["features"] == "digits-cnn" for r in rows)
    assert rows[0]["fid"] < rows[2]["fid"]  # untrained students are far from the data
    assert rows[1]["nfe"] == 3 and rows[2]["nfe"] == 6 and rows[3]["nfe"] == 1
    assert rows[2]["fid_std"] >= 0 and rows[2]["seeds"] == 2
    assert rows[2]["params"] == 288_516 and rows[2]["gflops_per_sample"] > rows[3]["gflops_per_sample"] > 0
    assert all(r["images_per_s"] > 0 for r in rows[1:])


def test_feature_network_round_trips_and_bad_files_are_named(tmp_path):
    from getlib.features import load_feature_net
    x, y = digits()
    train_idx, test_idx = split_indices(len(x), 450)
    net, report = train_feature_net(x, y, train_idx, test_idx, epochs=1, out_path=tmp_path / "features.pt")
    loaded, saved_report = load_feature_net(tmp_path / "features.pt")
    assert saved_report == {k: v for k, v in report.items() if k != "seconds"}   # the file holds no timing
    with torch.no_grad():
        torch.testing.assert_close(loaded.features(x[:5]), net.eval().features(x[:5]))
    with pytest.raises(FileNotFoundError, match="run the features stage first"):
        load_feature_net(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a feature network"):
        load_feature_net(tmp_path / "other.pt")


def test_kid_is_the_same_for_the_same_images_and_leaves_numpys_state_alone():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 8)), rng.normal(0.3, 1, size=(400, 8))
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    first, second = metrics.fid_kid(a, b), metrics.fid_kid(a, b)
    assert first["kid"] == second["kid"] and np.random.random() == before


def _filled_get(**deq):
    torch.manual_seed(0)
    model = GET_models["GET-P/2"](**DIGITS, deq=deq)
    with torch.no_grad():
        model.final_layer.linear.weight.normal_(0, 0.05)
    return model


def test_decoding_rules_score_the_same_samples_decoded_three_ways(space_and_reference):
    space, reference, _, _, root = space_and_reference
    model = _filled_get(recipe="truncated")
    rows = ev.decoding_rules(model, reference, space, root / "rules", n=64, seeds=(0, 1), seed_start=5)
    assert [(r["rule"], r["own"]) for r in rows] == [("abs", False), ("rel", False), ("last", True)]
    assert all(r["seeds"] == 2 and np.isfinite(r["fid"]) and r["iterations"] == 6 for r in rows)
    # 'last' is what the truncated recipe samples with: the same score as the model's own samples
    own = ev.scores_over_seeds(lambda off: ev.sample_student(model, 64, off)[0], reference, space, root / "own", 64,
                               (0, 1), 5)
    assert own["fid"] == rows[2]["fid"]
    assert ev.decoding_rule(_filled_get()) == "abs" and ev.decoding_rule(_filled_get(f_stop_mode="rel")) == "rel"


def test_fixed_point_diagnostics_by_hand(space_and_reference):
    space, reference, _, _, root = space_and_reference
    model = _filled_get()
    rows = ev.fixed_point_diagnostics(model, reference, space, root / "iterates", n=40, num_iter=3, seed_offset=7,
                                      batch_size=16)
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    latents, _ = ev.latents_for_seeds(range(7, 47), (1, 8, 8))
    z = model.iterates(latents, None, model.initial_states(range(7, 47)), 4)
    for r, k in zip(rows, (1, 2, 3)):
        diff = (z[k + 1] - z[k]).flatten(1).norm(dim=1)
        assert r["abs_residual"] == pytest.approx(diff.mean().item(), rel=1e-5)
        assert r["rel_residual"] == pytest.approx((diff / z[k + 1].flatten(1).norm(dim=1)).mean().item(), rel=1e-5)
        assert r["state_norm"] == pytest.approx(z[k].flatten(1).norm(dim=1).mean().item(), rel=1e-5)
        assert r["cos_next"] == pytest.approx(F.cosine_similarity(z[k].flatten(1), z[k + 1].flatten(1)).mean().item(),
                                              rel=1e-5)
    # iterate k's FID is that of k iterations decoded with return_final (the 'last' rule)
    images, _ = ev.sample_student(model, 40, 7, eval_f_max_iter=2, eval_f_tol=0.0, return_final=True)
    assert rows[1]["fid"] == pytest.approx(metrics.score_images(images, reference, space, root / "k2")["fid"], rel=1e-6)
