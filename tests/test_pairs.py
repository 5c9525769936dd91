"""Pair sets: seeds decide pairs, shards resume byte for byte, bad data is refused by name."""
import json

import numpy as np
import pytest
import torch

import getlib.pairs as pairs
from getlib.edm import SamplerConfig, edm_sampler, latents_for_seeds
from getlib.pairs import PairDataset, PairSpec, generate_pairs, import_released_pairs, read_manifest

SAMPLER = SamplerConfig(num_steps=4)
TEACHER_ID = {"kind": "test", "name": "toy"}


def toy_teacher(num_classes=None):
    """A cheap, nonlinear, class-aware denoiser: enough to give every seed a distinct image."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 16, generator=g) * 0.2
    class_shift = torch.randn(num_classes or 1, 16, generator=g)

    def denoise(x, sigma, labels):
        flat = x.float().reshape(x.shape[0], -1)
        h = torch.tanh(flat @ w / (1 + float(sigma)))
        if labels is not None:
            h = h + class_shift[labels]
        return (0.5 * h).reshape(x.shape)
    return denoise


def spec(**kw):
    return PairSpec(**{**dict(num_pairs=10, image_shape=(1, 4, 4), shard_size=4, batch_size=3), **kw})


def shard_bytes(root):
    return {p.name: p.read_bytes() for p in sorted((root / "shards").glob("*.npy"))}


def test_generated_pairs_are_the_teachers_samples_for_their_seeds(tmp_path):
    s = spec(seed_start=100, num_classes=3, image_dtype="float32")
    manifest = generate_pairs(toy_teacher(3), tmp_path, s, TEACHER_ID, SAMPLER)
    assert manifest["complete"] and manifest["num_pairs"] == 10 and len(manifest["shards"]) == 3
    assert [sh["count"] for sh in manifest["shards"]] == [4, 4, 2]
    assert manifest["sampler"]["nfe"] == 7 and manifest["teacher"] == TEACHER_ID
    ds = PairDataset(tmp_path, verify="sha256")
    assert len(ds) == 10
    latent, image, label = ds[7]
    want_latent, want_label = latents_for_seeds([107], (1, 4, 4), num_classes=3)
    assert torch.equal(latent, want_latent[0]) and label == want_label[0]
    alone = edm_sampler(toy_teacher(3), want_latent, want_label, num_steps=4)[0].float()
    # the float32 teacher may differ from a batched run by round-off only
    torch.testing.assert_close(image, alone, rtol=0, atol=1e-5)


def test_a_seeds_pair_does_not_depend_on_its_batch(tmp_path):
    a = generate_pairs(toy_teacher(), tmp_path / "a", spec(num_pairs=6, batch_size=6, image_dtype="float32"),
                       TEACHER_ID, SAMPLER)
    b = generate_pairs(toy_teacher(), tmp_path / "b", spec(num_pairs=6, batch_size=1, image_dtype="float32"),
                       TEACHER_ID, SAMPLER)
    da, db = PairDataset(tmp_path / "a"), PairDataset(tmp_path / "b")
    for i in range(6):
        assert torch.equal(da[i][0], db[i][0])                               # latents: bit for bit
        torch.testing.assert_close(da[i][1], db[i][1], rtol=0, atol=1e-5)    # images: round-off only
    assert a["spec"]["batch_size"] != b["spec"]["batch_size"]  # the batch is recorded with the set


def test_interrupted_generation_resumes_to_identical_bytes(tmp_path, monkeypatch):
    full = generate_pairs(toy_teacher(), tmp_path / "full", spec(), TEACHER_ID, SAMPLER)

    real_write = pairs._write_shard
    written = []

    def crash_after_two(path, records):
        if len(written) == 2:
            # a half-written temporary file is what a kill leaves behind
            (path.parent / f".{path.name}.crash.tmp").write_bytes(b"partial")
            raise KeyboardInterrupt
        written.append(path)
        real_write(path, records)

    monkeypatch.setattr(pairs, "_write_shard", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        generate_pairs(toy_teacher(), tmp_path / "resumed", spec(), TEACHER_ID, SAMPLER)
    with pytest.raises(ValueError, match="incomplete"):
        PairDataset(tmp_path / "resumed")
    monkeypatch.setattr(pairs, "_write_shard", real_write)
    resumed = generate_pairs(toy_teacher(), tmp_path / "resumed", spec(), TEACHER_ID, SAMPLER)
    assert shard_bytes(tmp_path / "full") == shard_bytes(tmp_path / "resumed")
    assert resumed["shards"] == full["shards"]
    assert all(p.name.endswith(".npy") for p in (tmp_path / "resumed" / "shards").iterdir())  # no stale temporaries
    # a finished set is returned as is, without regenerating, once its checksums pass; a set
    # verified before, and unchanged since, is not read again (only its manifest is hashed)
    monkeypatch.setattr(pairs, "_write_shard", crash_after_two)
    assert generate_pairs(toy_teacher(), tmp_path / "resumed", spec(), TEACHER_ID, SAMPLER) == resumed
    real_sha = pairs.file_sha256
    monkeypatch.setattr(pairs, "file_sha256", lambda path: real_sha(path) if path.name == pairs.MANIFEST
                        else pytest.fail(f"re-hashed {path} of a verified set"))
    assert generate_pairs(toy_teacher(), tmp_path / "resumed", spec(), TEACHER_ID, SAMPLER) == resumed


def test_ranks_generate_disjoint_shards_of_the_same_set(tmp_path):
    full = generate_pairs(toy_teacher(), tmp_path / "one", spec(), TEACHER_ID, SAMPLER)
    with pytest.raises(FileNotFoundError, match="no pair set"):  # rank 0 starts the set
        generate_pairs(toy_teacher(), tmp_path / "two", spec(), TEACHER_ID, SAMPLER, rank=1, world_size=2)
    pairs.start_pairs(tmp_path / "two", pairs._header(spec(), TEACHER_ID, SAMPLER, "seeds"))
    assert generate_pairs(toy_teacher(), tmp_path / "two", spec(), TEACHER_ID, SAMPLER, rank=1, world_size=2) is None
    assert sorted(shard_bytes(tmp_path / "two")) == ["shard-00001.npy"]
    two = generate_pairs(toy_teacher(), tmp_path / "two", spec(), TEACHER_ID, SAMPLER, rank=0, world_size=2)
    assert two["shards"] == full["shards"]


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    generate_pairs(toy_teacher(), tmp_path, spec(), TEACHER_ID, SAMPLER)
    with pytest.raises(ValueError, match=r"spec.shard_size: existing 4, asked 5"):
        generate_pairs(toy_teacher(), tmp_path, spec(shard_size=5), TEACHER_ID, SAMPLER)
    with pytest.raises(ValueError, match=r"sampler.num_steps: existing 4, asked 18.*delete"):
        generate_pairs(toy_teacher(), tmp_path, spec(), TEACHER_ID, SamplerConfig())
    with pytest.raises(ValueError, match=r"pairs have num_classes=None, expected 10"):
        PairDataset(tmp_path, expect={"num_classes": 10})


def test_corrupt_or_truncated_shards_are_refused_by_name(tmp_path):
    generate_pairs(toy_teacher(), tmp_path, spec(), TEACHER_ID, SAMPLER)
    shard = tmp_path / "shards" / "shard-00001.npy"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    PairDataset(tmp_path, verify="size")  # same length: only the checksum can tell
    with pytest.raises(ValueError, match="shard-00001.npy: sha256 does not match"):
        PairDataset(tmp_path, verify="sha256")
    shard.write_bytes(bytes(data[:-40]))
    with pytest.raises(ValueError, match="shard-00001.npy: truncated or corrupt shard"):
        PairDataset(tmp_path)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match="shard-00001.npy: shard listed in the manifest is missing"):
        PairDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="no pair set at .*nowhere"):
        PairDataset(tmp_path / "nowhere")


def test_shards_split_across_ranks(tmp_path):
    generate_pairs(toy_teacher(), tmp_path, spec(num_pairs=12, shard_size=3), TEACHER_ID, SAMPLER)
    seeds = []
    for rank in range(2):
        ds = PairDataset(tmp_path, rank=rank, world_size=2)
        assert len(ds) == 6
        seeds.append({int(ds._shard(j)["seed"][0]) for j in range(len(ds._files))})
    assert seeds == [{0, 6}, {3, 9}]
    uneven = tmp_path / "uneven"
    generate_pairs(toy_teacher(), uneven, spec(num_pairs=10, shard_size=3), TEACHER_ID, SAMPLER)
    assert [len(PairDataset(uneven, rank=r, world_size=2)) for r in range(2)] == [4, 4]  # 6 and 4 -> 4


def test_batch_reads_follow_the_requested_order_across_shards_and_ranks(tmp_path):
    s = spec(num_pairs=12, shard_size=3, num_classes=3, image_dtype="float32")
    generate_pairs(toy_teacher(3), tmp_path, s, TEACHER_ID, SAMPLER)
    whole = PairDataset(tmp_path)
    every = [whole[i] for i in range(12)]
    held = [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11]]     # rank r holds the shards k with k % 2 == r
    for rank in range(2):
        ds = PairDataset(tmp_path, rank=rank, world_size=2)
        order = [5, 0, 3, 3, 1]                           # out of order, repeated, across both shards
        latents, images, labels = ds.batch(order)
        wanted = ds.global_indices(order)
        assert wanted.tolist() == [held[rank][i] for i in order]
        for row, g in enumerate(wanted):
            assert torch.equal(latents[row], every[g][0]) and torch.equal(images[row], every[g][1])
            assert labels[row] == every[g][2]
        want_latents, want_labels = latents_for_seeds(wanted.tolist(), (1, 4, 4), num_classes=3)
        assert torch.equal(latents, want_latents) and torch.equal(labels, want_labels)
        with pytest.raises(IndexError, match=r"\[0, 6\)"):
            ds.batch([0, 6])
        with pytest.raises(ValueError, match="at least one"):
            ds.batch([])


def write_release(folder, n_files=2, per_file=3, cond=False, image_dtype=torch.float64):
    """The authors' layout: latent/ and image/ of torch.save files named by their last seed."""
    (folder / "latent").mkdir(parents=True)
    (folder / "image").mkdir()
    all_lat, all_img, all_lab = [], [], []
    for k in range(n_files):
        lat = torch.randn(per_file, 3, 4, 4)
        img = torch.randn(per_file, 3, 4, 4, dtype=image_dtype)
        name = f"{(k + 1) * per_file - 1:09d}.pkl"
        if cond:
            lab = torch.randint(10, (per_file,))
            torch.save([lat, torch.eye(10)[lab]], folder / "latent" / name)
            all_lab.append(lab)
        else:
            torch.save(lat, folder / "latent" / name)
        torch.save(img, folder / "image" / name)
        all_lat.append(lat)
        all_img.append(img)
    return torch.cat(all_lat), torch.cat(all_img), (torch.cat(all_lab) if cond else None)


@pytest.mark.parametrize("cond", [False, True])
def test_released_pairs_import(tmp_path, cond):
    lat, img, lab = write_release(tmp_path / "release", cond=cond)
    manifest = import_released_pairs(tmp_path / "release", tmp_path / "pairs", num_classes=10 if cond else None,
                                     image_dtype="float32", shard_size=4)
    assert manifest["latents"] == "stored" and manifest["num_pairs"] == 6 and len(manifest["shards"]) == 2
    ds = PairDataset(tmp_path / "pairs", verify="sha256")
    for i in range(6):
        latent, image, label = ds[i]
        assert torch.equal(latent, lat[i]) and torch.equal(image, img[i].float())
        assert label == (lab[i] if cond else -1)
    # float32 latent + float32 image here; float16 images give 3/4 of the release's 12 bytes per value
    assert manifest["bytes_per_pair"] == 16 + 3 * 4 * 4 * (4 + 4)


def test_released_pairs_go_into_a_new_folder(tmp_path):
    write_release(tmp_path / "release")
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="pairs: not empty"):
        import_released_pairs(tmp_path / "release", tmp_path / "pairs")


def test_released_pairs_with_bad_labels_are_refused(tmp_path):
    write_release(tmp_path / "release", cond=True)
    with pytest.raises(ValueError, match="holds \\[latents, labels\\].*pass num_classes"):
        import_released_pairs(tmp_path / "release", tmp_path / "pairs")
    with pytest.raises(ValueError, match="not one-hot over 5 classes"):
        import_released_pairs(tmp_path / "release", tmp_path / "pairs", num_classes=5)


def test_bytes_per_pair_against_the_release(tmp_path):
    s = spec(num_pairs=2, image_shape=(3, 32, 32))
    manifest = generate_pairs(lambda x, sigma, c: torch.zeros_like(x), tmp_path, s, TEACHER_ID, SAMPLER)
    assert manifest["bytes_per_pair"] == 16 + 3 * 32 * 32 * 2          # seed, label, float16 image
    assert pairs.released_bytes_per_pair((3, 32, 32)) == 36864          # float32 latent + float64 image
    assert manifest["bytes_per_pair_vs_released"] == pytest.approx(6160 / 36864)
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert read_manifest(tmp_path, verify="sha256") == manifest
    assert np.load(tmp_path / "shards" / "shard-00000.npy", mmap_mode="r").dtype.names == ("seed", "label", "image")


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    from getlib.data import digits
    from getlib.teacher import TeacherConfig, train_teacher
    x, y = digits()
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    train_teacher(x, y, TeacherConfig(channels=(16, 16), emb_dim=32, batch_size=32, max_steps=3), path)
    return path


CLI_ARGS = ["--num_pairs", "12", "--shard_size", "3", "--batch_size", "3", "--image_shape", "[1, 8, 8]",
            "--num_steps", "3", "--device", "cpu"]


def test_command_line_generates_a_pair_set(tmp_path, tiny_teacher, capsys):
    pairs.main(["--teacher", str(tiny_teacher), "--out", str(tmp_path / "pairs"), *CLI_ARGS])
    assert "12 pairs in 4 shards" in capsys.readouterr().out
    manifest = read_manifest(tmp_path / "pairs", verify="sha256")
    assert manifest["teacher"]["kind"] == "embedded" and manifest["sampler"]["nfe"] == 5
    with pytest.raises(ValueError, match="EDM pickle: give the EDM repository"):
        pairs.main(["--teacher", str(tmp_path / "edm.pkl"), "--out", str(tmp_path / "x"), *CLI_ARGS])


@pytest.mark.slow
def test_torchrun_ranks_build_the_same_pair_set(tmp_path, tiny_teacher):
    import os
    import subprocess
    import sys
    pairs.main(["--teacher", str(tiny_teacher), "--out", str(tmp_path / "single"), *CLI_ARGS])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "getlib.pairs", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "ddp"), *CLI_ARGS],
                   check=True, env=env, capture_output=True, timeout=300)
    assert shard_bytes(tmp_path / "single") == shard_bytes(tmp_path / "ddp")
    assert read_manifest(tmp_path / "ddp")["shards"] == read_manifest(tmp_path / "single")["shards"]
