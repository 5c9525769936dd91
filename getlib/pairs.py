"""Teacher noise/image pairs: sharded, checksummed, resumable; a Dataset; import of released pairs.

On disk (`root/`):

    manifest.json           shapes, dtypes, counts, seeds, teacher identity, sampler settings,
                            and per shard its file, seed range, count and sha256
    shards/shard-00000.npy  one numpy structured array per shard, memory-mappable, with fields
                            seed (int64), label (int64, -1 when unconditional), image (C, H, W) and,
                            for imported data only, latent (C, H, W) float32

Latents are not stored: pair i's latent is `edm.latents_for_seeds([seed_i], shape)`, regenerated
exactly. Shard k holds seeds seed_start + k * shard_size + [0, shard_size), generated in fixed
batches, so its bytes do not depend on when or where it was generated: an interrupted run resumes at
the first missing shard and ends byte-identical to an uninterrupted one. Every file is written to a
temporary name and renamed. Several processes (ranks) can generate disjoint shards at once.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from getlib.cli import add_flags, as_flags, read_flags
from getlib.devices import resolve_device
from getlib.edm import Denoiser, SamplerConfig, edm_sampler, latents_for_seeds
from getlib.io import atomic_write, atomic_write_json, file_sha256, first_line
from getlib.provenance import RECORD, code_fingerprint, read_record, write_record

__all__ = ["PairSpec", "generate_pairs", "PairDataset", "import_released_pairs", "read_manifest",
           "verify_pairs", "released_bytes_per_pair", "pair_set_problems", "cli_args", "VERIFIED"]

FORMAT = "getlib-pairs/1"
MANIFEST = "manifest.json"
VERIFIED = ".verified.json"     # which shard files (size, mtime) passed `verify_pairs` (a cache)
SHARD_FILE = re.compile(r"shards/shard-\d{5}\.npy")
# The authors' release stores a float32 latent and a float64 image per pair (37 GB per 1M CIFAR-10 pairs)
RELEASED_BYTES_PER_VALUE = 4 + 8


def released_bytes_per_pair(image_shape: tuple[int, ...]) -> int:
    return math.prod(image_shape) * RELEASED_BYTES_PER_VALUE


@dataclass(frozen=True)
class PairSpec:
    """What a pair set is: everything that determines its bytes (checked on resume and load)."""
    num_pairs: int
    image_shape: tuple[int, int, int]
    num_classes: int | None = None          # None: unconditional
    seed_start: int = 0
    shard_size: int = 10_000
    image_dtype: str = "float16"
    batch_size: int = 500                   # generation batch (fixed: part of the bytes)

    def __post_init__(self):
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        if self.image_dtype not in ("float16", "float32"):
            raise ValueError(f"pairs image_dtype must be 'float16' or 'float32', got {self.image_dtype!r}")
        for key in ("num_pairs", "shard_size", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"pairs {key} must be >= 1, got {getattr(self, key)}")
        if self.seed_start < 0:
            raise ValueError(f"pairs seed_start must be >= 0, got {self.seed_start}")
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"pairs image_shape must be (C, H, W) of positive sizes, got {self.image_shape}")
        if self.num_classes is not None and not (isinstance(self.num_classes, int) and self.num_classes >= 2):
            raise ValueError(f"pairs num_classes must be an integer >= 2 or None, got {self.num_classes!r}")

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_pairs / self.shard_size)

    def shard_seeds(self, k: int) -> range:
        lo = self.seed_start + k * self.shard_size
        return range(lo, min(lo + self.shard_size, self.seed_start + self.num_pairs))

    def as_dict(self) -> dict:
        return {"num_pairs": self.num_pairs, "image_shape": list(self.image_shape),
                "num_classes": self.num_classes, "seed_start": self.seed_start,
                "shard_size": self.shard_size, "image_dtype": self.image_dtype,
                "batch_size": self.batch_size}


def record_dtype(image_shape: tuple[int, ...], image_dtype: str, stored_latents: bool) -> np.dtype:
    fields = [("seed", "<i8"), ("label", "<i8"), ("image", np.dtype(image_dtype).newbyteorder("<"), image_shape)]
    if stored_latents:
        fields.append(("latent", "<f4", image_shape))
    return np.dtype(fields)


def shard_name(k: int) -> str:
    return f"shards/shard-{k:05d}.npy"


def _write_shard(path: Path, records: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, records, allow_pickle=False))


# ------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------

def _header(spec: PairSpec, teacher_id: dict, sampler: SamplerConfig, latents: str) -> dict:
    return {"format": FORMAT, "spec": spec.as_dict(), "latents": latents, "teacher": teacher_id,
            "sampler": sampler.as_dict()}


def _differences(have: object, want: object, prefix: str = "") -> list[str]:
    if isinstance(have, dict) and isinstance(want, dict):
        return [d for k in sorted(set(have) | set(want))
                for d in _differences(have.get(k), want.get(k), f"{prefix}{k}.")]
    return [] if have == want else [f"{prefix.rstrip('.')}: existing {have!r}, asked {want!r}"]


def _code() -> str:
    """The fingerprint of the code that turns a teacher and seeds into pairs."""
    return code_fingerprint("getlib.pairs")


def pair_set_problems(root: str | Path, spec: PairSpec, teacher_id: dict, sampler: SamplerConfig,
                      verify: bool = True) -> list[str]:
    """Why the folder `root` cannot be finished or reused as the pair set `spec` made by this teacher,
    sampler and code; [] when it can (or when there is nothing there). With `verify`, a finished set
    must pass `verify_pairs` (which caches its result in the folder) and an unfinished one's shards
    must each be complete, finite and hold their seeds; without, only the manifest and the record
    are read."""
    root = Path(root)
    if not root.exists():
        return []
    if not (root / MANIFEST).exists():
        stray = sorted(p.name for p in root.iterdir() if p.name not in (RECORD, VERIFIED))
        return [f"{root} holds {stray} but no {MANIFEST}"] if stray else []
    try:
        manifest = read_manifest(root, verify=False, complete=False)
    except ValueError as e:
        return [str(e)]
    problems = _differences({k: manifest.get(k) for k in _header(spec, teacher_id, sampler, "seeds")},
                            _header(spec, teacher_id, sampler, "seeds"))
    record = read_record(root)
    if record is None:
        problems.append(f"{root} has no provenance record: the code that made it is unknown")
    elif record.get("code") != _code():
        problems.append(f"{root} was made by other code (getlib.pairs and what it imports changed since)")
    if problems or not verify:
        return problems
    try:
        if manifest["complete"]:
            verify_pairs(root, manifest)
        else:
            for k in range(spec.num_shards):
                if (root / shard_name(k)).exists():
                    _check_shard(root / shard_name(k), spec, k)
    except (OSError, ValueError) as e:
        return [str(e)]
    return []


def generate_pairs(denoise: Denoiser, root: str | Path, spec: PairSpec, teacher_id: dict,
                   sampler: SamplerConfig = SamplerConfig(), device: str | torch.device = "cpu",
                   rank: int = 0, world_size: int = 1,
                   progress: Callable[[int, int], None] | None = None) -> dict | None:
    """Generate (or finish generating) the pair set `spec` into `root`; returns the manifest.

    `denoise(x, sigma, class_labels)` is the teacher; `teacher_id` identifies it in the manifest
    (e.g. its checkpoint's sha256). Rank r of `world_size` generates shards k with k % world_size
    == r. Rank 0 writes the first manifest (under torchrun, let it run `start_pairs` and synchronise
    before the others start) and, once every shard is present, checksums them and writes the final
    manifest, which it returns; other ranks return None (synchronise, then call rank 0 again).
    Existing shards are kept when `pair_set_problems` finds nothing wrong; otherwise the folder is
    refused with the reasons (a finished set is returned only after its checksums pass).
    """
    root = Path(root)
    header = _header(spec, teacher_id, sampler, "seeds")
    _refuse_problems(root, spec, teacher_id, sampler)
    existing = start_pairs(root, header) if rank == 0 else read_manifest(root, verify=False, complete=False)
    if existing["complete"]:
        return existing if rank == 0 else None
    done = 0
    for k in range(spec.num_shards):
        path = root / shard_name(k)
        if k % world_size != rank or path.exists():
            done += path.exists()
            continue
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a run killed mid-write
            stale.unlink()
        seeds = spec.shard_seeds(k)
        records = np.zeros(len(seeds), dtype=record_dtype(spec.image_shape, spec.image_dtype, False))
        for lo in range(0, len(seeds), spec.batch_size):
            batch = seeds[lo:lo + spec.batch_size]
            latents, labels = latents_for_seeds(batch, spec.image_shape, spec.num_classes)
            images = edm_sampler(denoise, latents.to(device), None if labels is None else labels.to(device),
                                 **asdict(sampler))
            records["seed"][lo:lo + len(batch)] = np.asarray(batch)
            records["label"][lo:lo + len(batch)] = -1 if labels is None else labels.numpy()
            with np.errstate(over="ignore"):   # an overflow becomes inf, refused below
                records["image"][lo:lo + len(batch)] = images.cpu().numpy().astype(spec.image_dtype)
        _refuse_non_finite(records, f"{path} (seeds {seeds.start}..{seeds.stop - 1})")
        _write_shard(path, records)
        done += 1
        if progress:
            progress(done, spec.num_shards)
    if rank == 0 and all((root / shard_name(k)).exists() for k in range(spec.num_shards)):
        return _finalise(root, header, spec)
    return None


def _refuse_problems(root: Path, spec: PairSpec, teacher_id: dict, sampler: SamplerConfig) -> None:
    problems = pair_set_problems(root, spec, teacher_id, sampler)
    if problems:
        raise ValueError(f"{root}: cannot finish or reuse this pair set: " + "; ".join(problems)
                         + f". Use another folder, or delete {root} to regenerate.")


def _refuse_non_finite(records: np.ndarray, where: str) -> None:
    """Refuse records with a NaN or infinite image or latent value, naming the first bad one."""
    for name in ("image", "latent"):
        if name in records.dtype.names:
            bad = ~np.isfinite(records[name].reshape(len(records), -1)).all(1)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                seed = int(records["seed"][i])
                raise ValueError(f"{where}: {int(bad.sum())} pair(s) have non-finite {name} values; the first is "
                                 f"record {i}" + (f" (seed {seed})" if seed >= 0 else "") + ": the teacher (or "
                                 "the source files) produced NaN or inf, or the values overflow the image_dtype")


def _check_shard(path: Path, spec: PairSpec, k: int) -> None:
    """An unfinished set's shard k: readable, of its records' type and count, its seeds, finite."""
    seeds = spec.shard_seeds(k)
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: truncated or corrupt shard ({first_line(e)})") from e
    dtype = record_dtype(spec.image_shape, spec.image_dtype, False)
    if arr.dtype != dtype or arr.shape != (len(seeds),) or not np.array_equal(arr["seed"], np.asarray(seeds)):
        raise ValueError(f"{path}: does not hold the {len(seeds)} records of seeds {seeds.start}..{seeds.stop - 1}")
    _refuse_non_finite(arr, str(path))


def start_pairs(root: Path, header: dict) -> dict:
    """The manifest of the pair set in `root`, first written (incomplete, with the provenance
    record of the code that makes it) if there is none."""
    if not (root / MANIFEST).exists():
        write_record(root, {"code": _code()})
        atomic_write_json(root / MANIFEST, {**header, "complete": False, "shards": []})
    return read_manifest(root, verify=False, complete=False)


def _finalise(root: Path, header: dict, spec: PairSpec) -> dict:
    """Checksum every shard and write the complete manifest."""
    shards = []
    for k in range(spec.num_shards):
        path = root / shard_name(k)
        count = int(np.load(path, mmap_mode="r").shape[0])
        first_seed = spec.shard_seeds(k).start if header["latents"] == "seeds" else None
        shards.append({"file": shard_name(k), "count": count, "first_seed": first_seed,
                       "sha256": file_sha256(path)})
    size = record_dtype(spec.image_shape, spec.image_dtype, header["latents"] == "stored").itemsize
    manifest = {**header, "complete": True, "num_pairs": sum(s["count"] for s in shards), "shards": shards,
                "bytes_per_pair": size,
                "bytes_per_pair_vs_released": size / released_bytes_per_pair(spec.image_shape)}
    atomic_write_json(root / MANIFEST, manifest)
    return manifest


# ------------------------------------------------------------------------------------------------
# Reading and checking
# ------------------------------------------------------------------------------------------------

def read_manifest(root: str | Path, verify: bool | str = True, complete: bool = True) -> dict:
    """The manifest of a pair set, checked: verify=True (or 'sha256') checks every shard's
    checksum, record type, count and finiteness (`verify_pairs`, once per unchanged set); 'size'
    only the type and count; False nothing beyond the manifest itself."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no pair set at {root} (missing {MANIFEST}): generate the pairs first")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    _check_manifest(path, manifest)
    if complete and not manifest["complete"]:
        raise ValueError(f"{path}: the pair set is incomplete (generation was interrupted): "
                         f"run the generation again to finish it")
    if verify:
        verify_pairs(root, manifest, checksums=verify in (True, "sha256"))
    return manifest


def _check_manifest(path: Path, m: object) -> None:
    """The manifest's structure: every key the readers use, of the right kind; shard files only
    under shards/ (a manifest cannot point elsewhere)."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"{path}: not a pair set manifest: {what}")
    need(isinstance(m, dict), f"expected a JSON object, got {type(m).__name__}")
    need(m.get("format") == FORMAT, f"format {m.get('format')!r}, expected {FORMAT!r}")
    spec = m.get("spec")
    need(isinstance(spec, dict), "'spec' must be an object")
    shape = spec.get("image_shape")
    need(isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape),
         f"spec.image_shape must be three positive integers, got {shape!r}")
    need(spec.get("image_dtype") in ("float16", "float32"), f"spec.image_dtype {spec.get('image_dtype')!r}")
    need(spec.get("num_classes") is None or (isinstance(spec["num_classes"], int) and spec["num_classes"] > 0),
         f"spec.num_classes {spec.get('num_classes')!r}")
    need(m.get("latents") in ("seeds", "stored"), f"latents {m.get('latents')!r}, expected 'seeds' or 'stored'")
    need(isinstance(m.get("complete"), bool), "'complete' must be true or false")
    shards = m.get("shards")
    need(isinstance(shards, list), "'shards' must be a list")
    if m["complete"]:
        for i, s in enumerate(shards):
            need(isinstance(s, dict) and isinstance(s.get("file"), str) and SHARD_FILE.fullmatch(s["file"]),
                 f"shards[{i}].file must be shards/shard-NNNNN.npy, got {s.get('file') if isinstance(s, dict) else s!r}")
            need(isinstance(s.get("count"), int) and s["count"] >= 0, f"shards[{i}].count {s.get('count')!r}")
            need(isinstance(s.get("sha256"), str) and len(s["sha256"]) == 64, f"shards[{i}].sha256 {s.get('sha256')!r}")
        need(len(shards) > 0, "a complete pair set lists no shards")
        for key in ("num_pairs", "bytes_per_pair", "bytes_per_pair_vs_released"):
            need(isinstance(m.get(key), (int, float)), f"'{key}' must be a number")


def verify_pairs(root: Path, manifest: dict, checksums: bool = True) -> None:
    """Check every shard the manifest lists: present, of the manifest's record type and count,
    and (checksums) its sha256 and finite values. A full check is remembered in `.verified.json`
    against the manifest's sha256 and each shard's size and modification time, so that a set is
    read in full once, not at every stage that opens it; any change to a file checks it again."""
    root = Path(root)
    spec = manifest["spec"]
    dtype = record_dtype(tuple(spec["image_shape"]), spec["image_dtype"], manifest["latents"] == "stored")
    stamps = {}
    for shard in manifest["shards"]:
        path = root / shard["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shard listed in the manifest is missing")
        stat = path.stat()
        stamps[shard["file"]] = [stat.st_size, stat.st_mtime_ns]
    key = {"manifest_sha256": file_sha256(root / MANIFEST), "shards": stamps}
    if checksums and read_record(root, VERIFIED) == key:
        return
    for shard in manifest["shards"]:
        path = root / shard["file"]
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: truncated or corrupt shard ({first_line(e)})") from e
        if arr.dtype != dtype or arr.shape != (shard["count"],):
            raise ValueError(f"{path}: holds {arr.shape} records of {arr.dtype}, manifest says "
                             f"({shard['count']},) of {dtype}")
        if checksums:
            if file_sha256(path) != shard["sha256"]:
                raise ValueError(f"{path}: sha256 does not match the manifest: the shard is corrupt; "
                                 f"delete the pair set and generate it again")
            _refuse_non_finite(arr, str(path))
    if checksums:
        try:
            write_record(root, key, VERIFIED)
        except OSError:   # a read-only pair set is checked in full every time
            pass


class PairDataset(Dataset):
    """(latent, image, label) triples of a pair set, memory-mapped shard by shard.

    Latents are regenerated from the seeds (or read, for imported data); images are float32;
    label is -1 for unconditional data. With world_size > 1, rank r reads the shards k with
    k % world_size == r, and every rank sees the same number of pairs (the smallest rank's count),
    so DDP ranks run the same number of steps. The set is verified first (`read_manifest`): its
    checksums and finite values, once per unchanged set.
    """

    def __init__(self, root: str | Path, rank: int = 0, world_size: int = 1, verify: bool | str = True,
                 expect: dict | None = None):
        self.root = Path(root)
        self.manifest = read_manifest(self.root, verify=verify)
        for key, want in (expect or {}).items():
            have = self.manifest["spec"].get(key, self.manifest.get(key))
            if have != want:
                raise ValueError(f"{self.root / MANIFEST}: pairs have {key}={have!r}, expected {want!r}")
        spec = self.manifest["spec"]
        self.image_shape = tuple(spec["image_shape"])
        self.num_classes = spec["num_classes"]
        self.stored_latents = self.manifest["latents"] == "stored"
        shards = self.manifest["shards"]
        if len(shards) < world_size:
            raise ValueError(f"{self.root}: {len(shards)} shards cannot be split over {world_size} ranks")
        mine = [k for k in range(len(shards)) if k % world_size == rank]
        per_rank = min(sum(s["count"] for s in shards[r::world_size]) for r in range(world_size))
        starts = np.cumsum([0] + [s["count"] for s in shards])   # global index of each shard's first pair
        self._files = [self.root / shards[k]["file"] for k in mine]
        self._offsets = np.cumsum([0] + [shards[k]["count"] for k in mine])
        self._global_starts = starts[mine]
        self._length = per_rank
        self._arrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self._length

    def _shard(self, j: int) -> np.ndarray:
        if j not in self._arrays:  # opened lazily: each DataLoader worker maps its own
            self._arrays[j] = np.load(self._files[j], mmap_mode="r")
        return self._arrays[j]

    def _shards_of(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """This rank's pairs `indices` as (shard number, position in that shard)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self._length):
            raise IndexError(f"pair indices must lie in [0, {self._length}), got {idx.min()}..{idx.max()}")
        shard = np.searchsorted(self._offsets, idx, side="right") - 1
        return shard, idx - self._offsets[shard]

    def global_indices(self, indices: Sequence[int]) -> np.ndarray:
        """Positions of this rank's pairs `indices` in the whole set (the same on any number of ranks)."""
        shard, pos = self._shards_of(indices)
        return self._global_starts[shard] + pos

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        latents, images, labels = self.batch([i])
        return latents[0], images[0], labels[0]

    def batch(self, indices: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        """(latents, images, labels) of this rank's pairs `indices`, stacked in their order:
        one read per shard touched, instead of one per pair (the training loop's data path)."""
        shard, pos = self._shards_of(indices)
        if not len(pos):
            raise ValueError("batch() needs at least one pair index")
        records = np.empty(len(pos), dtype=self._shard(0).dtype)
        for j in np.unique(shard):
            at = np.flatnonzero(shard == j)
            records[at] = self._shard(int(j))[pos[at]]
        images = torch.from_numpy(records["image"].astype(np.float32))
        if self.stored_latents:
            latents = torch.from_numpy(records["latent"].astype(np.float32))
        else:
            latents = latents_for_seeds(records["seed"].tolist(), self.image_shape)[0]
        return latents, images, torch.from_numpy(records["label"].astype(np.int64))


# ------------------------------------------------------------------------------------------------
# The authors' released pair files
# ------------------------------------------------------------------------------------------------

def _released_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (the released pairs hold latent/ and image/)")
    files = [p for p in folder.iterdir() if p.is_file()]
    stray = sorted(p.name for p in files if not re.fullmatch(r"\d+\.pkl", p.name))
    if stray:
        raise ValueError(f"{folder}: released pair files are named <last seed>.pkl; found {stray}")
    return sorted(files, key=lambda p: int(p.stem))


def import_released_pairs(src: str | Path, root: str | Path, num_classes: int | None = None,
                          image_dtype: str = "float16", shard_size: int = 12_500) -> dict:
    """Convert the authors' pair folder (`latent/` and `image/` of torch.save shards, matched by
    name; conditional latent files hold [latents, one-hot labels]) into this format.

    Files are read one file at a time with weights_only=True and written out shard by shard into a
    temporary folder beside `root`, which is renamed to `root` only when the import is complete (a
    failed import leaves nothing that looks like a pair set). Their latents cannot come from our
    seeds, so they are stored (float32); seeds are recorded as -1. Non-finite values are refused,
    naming the file. Returns the manifest.
    """
    src, root = Path(src), Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root}: not empty; import the released pairs into a new folder")
    lat_files, img_files = _released_files(src / "latent"), _released_files(src / "image")
    if not lat_files or [p.name for p in lat_files] != [p.name for p in img_files]:
        raise ValueError(f"{src}: latent/ and image/ must hold the same, non-empty list of files")
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".partial"))
    try:
        manifest = _import(src, partial, lat_files, img_files, num_classes, image_dtype, shard_size)
        if root.exists():
            root.rmdir()   # the empty folder checked above
        os.replace(partial, root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _import(src: Path, root: Path, lat_files: list[Path], img_files: list[Path], num_classes: int | None,
            image_dtype: str, shard_size: int) -> dict:
    buffer: list[np.ndarray] = []
    buffered = n_shards = total = 0
    image_shape = None

    def flush(final: bool) -> None:
        nonlocal buffer, buffered, n_shards
        records = np.concatenate(buffer) if buffer else np.zeros(0)
        while len(records) >= shard_size or (final and len(records)):
            _write_shard(root / shard_name(n_shards), records[:shard_size])
            records, n_shards = records[shard_size:], n_shards + 1
        buffer, buffered = [records] if len(records) else [], len(records)

    for lp, ip in zip(lat_files, img_files):
        try:
            lat = torch.load(lp, map_location="cpu", weights_only=True)
            img = torch.load(ip, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{lp} / {ip}: not readable as torch.save tensors ({first_line(e)})") from e
        labels = None
        if isinstance(lat, (list, tuple)):
            if num_classes is None:
                raise ValueError(f"{lp}: holds [latents, labels] (class-conditional data): pass num_classes")
            if len(lat) != 2 or not all(isinstance(t, torch.Tensor) for t in lat):
                raise ValueError(f"{lp}: a class-conditional latent file holds [latents, one-hot labels] tensors")
            lat, onehot = lat
            if (onehot.shape != (lat.shape[0], num_classes) or not torch.all((onehot == 0) | (onehot == 1))
                    or not torch.all(onehot.sum(1) == 1)):
                raise ValueError(f"{lp}: labels are not one-hot over {num_classes} classes "
                                 f"(shape {tuple(onehot.shape)}, values 0 and 1, one 1 per row)")
            labels = onehot.argmax(1).numpy()
        elif num_classes is not None:
            raise ValueError(f"{lp}: holds latents only (unconditional data), but num_classes={num_classes}")
        if not isinstance(lat, torch.Tensor):
            raise ValueError(f"{lp}: holds {type(lat).__name__}, not a tensor of latents")
        if not isinstance(img, torch.Tensor) or lat.shape != img.shape or lat.dim() != 4:
            raise ValueError(f"{lp} / {ip}: latent {tuple(lat.shape)} and image "
                             f"{tuple(getattr(img, 'shape', ()))} are not matching (N, C, H, W) tensors")
        if image_shape is None:
            image_shape = tuple(img.shape[1:])
        elif tuple(img.shape[1:]) != image_shape:
            raise ValueError(f"{ip}: image shape {tuple(img.shape[1:])}, earlier files {image_shape}")
        rec = np.zeros(len(img), dtype=record_dtype(image_shape, image_dtype, True))
        rec["seed"], rec["label"] = -1, -1 if labels is None else labels
        with np.errstate(over="ignore"):   # an overflow becomes inf, refused below
            rec["image"], rec["latent"] = img.numpy().astype(image_dtype), lat.float().numpy()
        _refuse_non_finite(rec, f"{lp} / {ip}")
        buffer.append(rec)
        buffered += len(rec)
        total += len(rec)
        if buffered >= shard_size:
            flush(final=False)
    flush(final=True)
    spec = PairSpec(num_pairs=total, image_shape=image_shape, num_classes=num_classes, seed_start=0,
                    shard_size=shard_size, image_dtype=image_dtype, batch_size=shard_size)
    header = {"format": FORMAT, "spec": spec.as_dict(), "latents": "stored",
              "teacher": {"kind": "released-pairs", "source": src.resolve().name},
              "sampler": SamplerConfig().as_dict()}
    return _finalise(root, header, spec)


# ------------------------------------------------------------------------------------------------
# Command line: python -m getlib.pairs ... (torchrun for several GPUs)
# ------------------------------------------------------------------------------------------------

def cli_args(spec: PairSpec, sampler: SamplerConfig) -> list[str]:
    """The pair set's settings as the flags `main` reads back to the same `PairSpec` and
    `SamplerConfig` (the teacher, out folder and device are flags of their own)."""
    return as_flags(spec) + as_flags(sampler)


def main(argv: list[str] | None = None) -> None:
    import argparse

    import torch.distributed as dist

    from getlib.checkpoints import teacher_from_checkpoint

    ap = argparse.ArgumentParser(prog="python -m getlib.pairs", description=(
        "Generate teacher noise/image pairs into a sharded, checksummed pair set (resumable). "
        "Under torchrun every rank generates its share of the shards. Every PairSpec and "
        "SamplerConfig field is a flag (YAML values: --image_shape [3,32,32])."))
    ap.add_argument("--teacher", required=True, help="embedded teacher .pt or official EDM .pkl")
    ap.add_argument("--edm-repo", help="folder of github.com/NVlabs/edm (for .pkl teachers)")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="unpickle a .pkl teacher that is not one of the official checkpoints (it runs code)")
    ap.add_argument("--out", required=True, help="pair set folder")
    ap.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda")
    add_flags(ap, PairSpec)
    add_flags(ap, SamplerConfig)
    args = vars(ap.parse_args(argv))
    spec = PairSpec(**read_flags({k: v for k, v in args.items() if k in PairSpec.__dataclass_fields__}, PairSpec))
    sampler = SamplerConfig(**read_flags({k: v for k, v in args.items() if k in SamplerConfig.__dataclass_fields__},
                                         SamplerConfig))
    out = Path(args["out"])

    world = int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(args["device"], int(os.environ.get("LOCAL_RANK", 0)))
    rank = 0
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank = dist.get_rank()
        if device.type == "cuda":
            torch.cuda.set_device(device)
    denoise, teacher_id = teacher_from_checkpoint(args["teacher"], args["edm_repo"], args["trust_pickle"])
    denoise = denoise.to(device)
    report = (lambda done, total: print(f"rank {rank}: shard {done}/{total}", flush=True)) if rank == 0 else None
    if rank == 0:   # refuse a folder it cannot finish before writing anything into it
        _refuse_problems(out, spec, teacher_id, sampler)
        start_pairs(out, _header(spec, teacher_id, sampler, "seeds"))
    if world > 1:
        dist.barrier()  # the manifest exists before the other ranks check it
    manifest = generate_pairs(denoise, out, spec, teacher_id, sampler, device, rank, world, report)
    if world > 1:
        dist.barrier()
        if rank == 0 and manifest is None:
            manifest = generate_pairs(denoise, out, spec, teacher_id, sampler, device, 0, world)
        dist.destroy_process_group()
    if rank == 0:
        print(f"{manifest['num_pairs']} pairs in {len(manifest['shards'])} shards at {out} "
              f"({manifest['bytes_per_pair']} bytes per pair, {manifest['bytes_per_pair_vs_released']:.2f}x "
              f"the released format)")


if __name__ == "__main__":
    main()
