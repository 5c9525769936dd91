"""params.yaml as typed, validated sections: the pipeline's single configuration.

Every stage loads the whole file with `load_params` and reads its own sections; dvc.yaml lists, per
stage, exactly the sections it reads. A bad file fails at once with a message that names the key
(`students.get-p.train.lr must be a number, got 'fast'`) and, where there is a fixed set, the
allowed values. Paths in the file are relative to the project root (the folder holding dvc.yaml).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from getlib.devices import resolve_device
from getlib.settings import GET_CONFIGS, SOLVER_NAMES, VIT_CONFIGS, SamplerConfig, TeacherConfig, TrainConfig, field_types, typed

__all__ = ["Params", "ParamsError", "load_params", "project_root", "check_name", "device_of", "CONDITIONS"]

CONDITIONS = ("uncond", "cond")
# Profile and student names become folder names (work/<profile>/students/<student>/): plain
# identifiers only, so that no name can point outside the project.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_name(key: str, name: object) -> str:
    """`name` if it is a plain identifier (letters, digits, '-', '_'; 64 at most), else an error naming `key`."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ParamsError(f"{key}: {name!r} is not a valid name: use letters, digits, '-' and '_' "
                          f"(starting with a letter or digit, at most 64), since it becomes a folder name")
    return name


class ParamsError(ValueError):
    """params.yaml is not valid: the message names the key."""


# ------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------

@dataclass
class DataParams:
    dataset: str = "digits"               # 'digits' (scikit-learn's, offline) | 'cifar10'
    root: str | None = None               # cifar10: the folder holding cifar-10-batches-py
    held_out: int = 450                   # digits: images kept out of the feature net's training (the FID floor)
    split_seed: int = 0
    check_md5: bool = True                # cifar10: the files must have the published md5 (false: a modified copy)

    def check(self, key: str) -> None:
        _one_of(f"{key}.dataset", self.dataset, ("digits", "cifar10"))
        if self.dataset == "cifar10" and not self.root:
            raise ParamsError(f"{key}.root must name the folder holding cifar-10-batches-py for dataset cifar10")
        _at_least(key, self, held_out=1, split_seed=0)


@dataclass
class FeaturesParams:
    network: str = "classifier"           # 'classifier': a CNN trained here on the data | 'inception': clean-fid's
    mode: str = "clean"                   # inception: clean-fid mode, 'clean' | 'legacy_tensorflow'
    epochs: int = 40                      # classifier training epochs
    reference: str = "train"              # inception on cifar10: reference split 'train' (50k) | 'test' (10k)

    def check(self, key: str) -> None:
        _one_of(f"{key}.network", self.network, ("classifier", "inception"))
        _one_of(f"{key}.mode", self.mode, ("clean", "legacy_tensorflow"))
        _one_of(f"{key}.reference", self.reference, ("train", "test"))
        _at_least(key, self, epochs=1)


@dataclass
class TeacherParams:
    """The teacher section: where the teacher comes from, and (source train) the section's other
    keys, the embedded teacher's `TeacherConfig` fields, which that dataclass validates."""
    source: str = "train"                 # 'train': the embedded UNet, trained here | 'checkpoint': EDM .pkl files
    checkpoints: dict = field(default_factory=dict)   # source checkpoint: {uncond: path.pkl, cond: path.pkl}
    edm_repo: str | None = None           # source checkpoint: a clone of github.com/NVlabs/edm
    trust_pickle: bool = False            # source checkpoint: unpickle files that are not the official checkpoints
    train: TeacherConfig = field(default_factory=TeacherConfig)   # source train: the teacher's training

    def check(self, key: str) -> None:
        _one_of(f"{key}.source", self.source, ("train", "checkpoint"))
        if self.source == "checkpoint" and not self.edm_repo:
            raise ParamsError(f"{key}.edm_repo must name a clone of github.com/NVlabs/edm for source checkpoint "
                              f"(its pickles import EDM's code)")
        unknown = sorted(set(self.checkpoints) - set(CONDITIONS))
        if unknown:
            raise ParamsError(f"{key}.checkpoints: unknown condition(s) {unknown}; allowed: {list(CONDITIONS)}")
        for c, path in self.checkpoints.items():
            if not isinstance(path, str):
                raise ParamsError(f"{key}.checkpoints.{c} must be a path, got {path!r}")

    def checkpoint(self, condition: str, root: Path) -> Path:
        """The EDM checkpoint for `condition` (source 'checkpoint'); a clear error when it is missing."""
        path = self.checkpoints.get(condition)
        if path is None:
            raise ParamsError(f"teacher.checkpoints.{condition} is not set: name the EDM .pkl for the "
                              f"{condition} teacher (see README, CIFAR-10 profiles)")
        full = (root / path) if not Path(path).is_absolute() else Path(path)
        if not full.is_file():
            raise ParamsError(f"teacher.checkpoints.{condition}: no file at {full} (download it: README, "
                              f"CIFAR-10 profiles)")
        return full

    def train_config(self, condition: str) -> TeacherConfig:
        """The embedded teacher of `condition`: its training settings, class-conditional or not."""
        return dataclasses.replace(self.train, cond=condition == "cond")


@dataclass
class PairsParams:
    num_pairs: int = 12_000               # per condition
    shard_size: int = 4000
    batch_size: int = 500                 # generation batch (part of the pairs' bytes)
    image_dtype: str = "float16"
    seed_start: int = 0
    device: str = "auto"
    nproc: int = 1                        # > 1: torchrun --nproc_per_node (one GPU each)

    def check(self, key: str) -> None:
        _one_of(f"{key}.image_dtype", self.image_dtype, ("float16", "float32"))
        _one_of(f"{key}.device", self.device, ("auto", "cpu", "cuda"))
        _at_least(key, self, num_pairs=1, shard_size=1, batch_size=1, nproc=1, seed_start=0)


@dataclass
class StudentParams:
    model: str                            # a name from settings.GET_CONFIGS or VIT_CONFIGS
    condition: str = "uncond"             # which teacher's pairs: 'uncond' | 'cond' (class-conditional student)
    train: dict = field(default_factory=dict)   # overrides of the shared `distill` settings for this student

    def check(self, key: str) -> None:
        models = {**GET_CONFIGS, **VIT_CONFIGS}
        if self.model not in models:
            raise ParamsError(f"{key}.model: unknown model {self.model!r}; allowed: {sorted(models)}")
        _one_of(f"{key}.condition", self.condition, CONDITIONS)
        if self.model in VIT_CONFIGS and isinstance(self.train, dict) and self.train.get("deq"):
            raise ParamsError(f"{key}.train.deq: DEQ settings apply to GET models, not to {self.model}")


@dataclass
class EvaluateParams:
    num_samples: int = 450                # images per FID (the floor uses the same count of held-out images)
    seeds: int = 3                        # disjoint seed ranges per generated source (mean and spread)
    seed_start: int = 1_000_000_000       # first evaluation seed: apart from the pairs' (training) seeds
    batch_size: int = 500
    sweep_iterations: list = field(default_factory=lambda: [1, 2, 3, 4, 6, 8, 12])
    sweep_solvers: list = field(default_factory=lambda: ["fixed_point_iter", "anderson"])
    device: str = "auto"

    def check(self, key: str) -> None:
        _one_of(f"{key}.device", self.device, ("auto", "cpu", "cuda"))
        _at_least(key, self, num_samples=1, seeds=1, batch_size=1, seed_start=0)
        if not all(isinstance(k, int) and k >= 1 for k in self.sweep_iterations):
            raise ParamsError(f"{key}.sweep_iterations must be positive integers, got {self.sweep_iterations!r}")
        for s in self.sweep_solvers:
            _one_of(f"{key}.sweep_solvers", s, SOLVER_NAMES)


@dataclass
class FiguresParams:
    grid_samples: int = 64                # images per sample grid (same seeds for every source)

    def check(self, key: str) -> None:
        _at_least(key, self, grid_samples=1)


# ------------------------------------------------------------------------------------------------
# The whole file
# ------------------------------------------------------------------------------------------------

# Training settings a student may not take from `distill` (the pipeline sets them).
PIPELINE_SET = {"pairs", "out", "model", "cond"}


@dataclass
class Params:
    profile: str
    conditions: list[str]                  # the teacher/pair chains to run: 'uncond' and/or 'cond'
    data: DataParams
    features: FeaturesParams
    teacher: TeacherParams
    sampler: SamplerConfig
    pairs: PairsParams
    distill: dict                          # shared TrainConfig settings (+ nproc) for every student
    students: dict[str, StudentParams]
    evaluate: EvaluateParams
    figures: FiguresParams
    reuse: str | None = None               # a profile whose identical finished pair sets and runs are copied
    root: Path = Path(".")                 # the project root (paths in the file are relative to it)

    def work(self, *parts: str) -> Path:
        """Heavy artifacts (DVC-cached, git-ignored): work/<profile>/..."""
        return self._under("work", parts)

    def results(self, *parts: str) -> Path:
        """Small committed results: results/<profile>/..."""
        return self._under("results", parts)

    def _under(self, top: str, parts: tuple[str, ...]) -> Path:
        base = (self.root / top / check_name("profile", self.profile)).resolve()
        path = base / Path(*parts)
        if path.resolve() != base and base not in path.resolve().parents:
            raise ParamsError(f"{path} lies outside {base}: every path the pipeline builds stays inside {top}/<profile>/")
        return path

    def train_config(self, key: str) -> TrainConfig:
        """The full, validated TrainConfig of student `key`."""
        if key not in self.students:
            raise ParamsError(f"students.{key}: no such student; params.yaml names {sorted(self.students)}")
        s = self.students[key]
        overrides = _numbers(s.train, f"students.{key}.train")
        shared = {k: v for k, v in self.distill.items() if k != "nproc"}
        if s.model in VIT_CONFIGS:
            shared.pop("deq", None)    # the shared DEQ recipe is for the GET students
        settings = {**shared, **{k: v for k, v in overrides.items() if k != "nproc"}}
        settings.update(pairs=str(self.work("pairs", s.condition)), out=str(self.work("students", key)),
                        model=s.model, cond=s.condition == "cond")
        try:
            return TrainConfig.from_dict(settings)
        except (ValueError, TypeError) as e:  # `distill` alone was checked on load: the overrides are at fault
            raise ParamsError(f"students.{key}.train: {e}") from e

    def reused(self, *parts: str) -> Path | None:
        """work/<reuse>/<parts>: the same artifact of the profile named by `reuse` (None without one).
        Stages only read it, and copy it in only when it is exactly what they would make."""
        if self.reuse is None:
            return None
        return self.root / "work" / self.reuse / self.work(*parts).relative_to(self.work())

    def path(self, path: str) -> Path:
        """A path of the file (relative to the project root unless absolute)."""
        return Path(path) if Path(path).is_absolute() else self.root / path

    def teacher_file(self, condition: str) -> Path:
        """The teacher stage's file for `condition`, by teacher.source: teacher.pt (trained here) or the
        copy of the EDM checkpoint that teacher.checkpoints names."""
        folder = self.work("teacher", condition)
        if self.teacher.source == "train":
            path = folder / "teacher.pt"
        else:
            name = self.teacher.checkpoints.get(condition)
            if name is None:
                raise ParamsError(f"teacher.checkpoints.{condition} is not set: name the EDM .pkl for the "
                                  f"{condition} teacher (see README, CIFAR-10 profiles)")
            path = folder / Path(name).name
        if not path.is_file():
            raise FileNotFoundError(f"no teacher at {path}: run the teacher@{condition} stage first")
        return path

    def student_files(self, condition: str) -> dict[str, Path]:
        """{student: its distill stage's student.pt} for the students of `condition`."""
        return {key: self.work("students", key, "student.pt") for key, s in self.students.items()
                if s.condition == condition}

    def nproc(self, key: str) -> int:
        return {**self.distill, **self.students[key].train}.get("nproc", 1)


def device_of(name: str) -> torch.device:
    """The torch device of a params.yaml device setting ('auto': CUDA when torch sees a GPU), by
    the one resolver (`devices.resolve_device`); an impossible one is a ParamsError."""
    try:
        return resolve_device(name)
    except ValueError as e:
        raise ParamsError(str(e)) from None


def project_root(start: str | Path = ".") -> Path:
    """The folder holding dvc.yaml, searched upwards from `start` (notebooks run in notebooks/)."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no dvc.yaml in {here} or above: run from inside the project")


def load_params(path: str | Path = "params.yaml", root: str | Path | None = None) -> Params:
    """Read and validate params.yaml; every error names its key. Paths in it are relative to `root`
    (default: the file's folder; give the project root for a file in profiles/)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no params file at {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    sections = {f.name: f for f in dataclasses.fields(Params) if f.name != "root"}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ParamsError(f"unknown key(s) {unknown} in {path.name}; allowed: {sorted(sections)}")
    missing = sorted(k for k in ("profile", "conditions", "students") if k not in raw)
    if missing:
        raise ParamsError(f"{path.name} lacks {missing}")
    profile = check_name("profile", raw["profile"])
    students = raw["students"]
    if not isinstance(students, dict) or not students:
        raise ParamsError("students must map names to {model, condition, train}, e.g. get-p: {model: GET-P/2}")
    for name in students:
        check_name(f"students.{name}", name)
    conditions = raw["conditions"]
    if not isinstance(conditions, list) or not conditions or len(set(map(str, conditions))) != len(conditions):
        raise ParamsError(f"conditions must be a list of distinct conditions from {list(CONDITIONS)}, got {conditions!r}")
    for c in conditions:
        _one_of("conditions", c, CONDITIONS)
    params = Params(
        profile=profile,
        conditions=list(conditions),
        data=_section(DataParams, raw.get("data"), "data"),
        features=_section(FeaturesParams, raw.get("features"), "features"),
        teacher=_teacher(raw.get("teacher")),
        sampler=_section(SamplerConfig, raw.get("sampler"), "sampler"),
        pairs=_section(PairsParams, raw.get("pairs"), "pairs"),
        distill=_distill(raw.get("distill")),
        students={str(k): _section(StudentParams, v, f"students.{k}") for k, v in students.items()},
        evaluate=_section(EvaluateParams, raw.get("evaluate"), "evaluate"),
        figures=_section(FiguresParams, raw.get("figures"), "figures"),
        reuse=_reuse(raw.get("reuse"), profile),
        root=Path(root).resolve() if root is not None else path.resolve().parent,
    )
    for key, s in params.students.items():
        if not isinstance(s.train, dict):
            raise ParamsError(f"students.{key}.train must be a mapping of training settings, got {s.train!r}")
        bad = sorted(PIPELINE_SET & set(s.train))
        if bad:
            raise ParamsError(f"students.{key}.train sets {bad}: the pipeline sets these (use model / condition)")
        _check_nproc(f"students.{key}.train.nproc", s.train.get("nproc", 1))
        params.train_config(key)       # every student's full training settings are valid now
        if s.condition not in params.conditions:
            raise ParamsError(f"students.{key}.condition {s.condition!r} is not in conditions {params.conditions}")
    _check_across(params)
    return params


def _check_across(p: Params) -> None:
    """What one setting cannot satisfy with another (or with the data), named by both keys, so that
    it stops the pipeline on load rather than a stage hours in."""
    e, pairs = p.evaluate, p.pairs
    if e.seed_start < pairs.seed_start + pairs.num_pairs and pairs.seed_start < e.seed_start + e.seeds * e.num_samples:
        raise ParamsError(f"evaluate.seed_start {e.seed_start}: the evaluation seeds overlap the training pairs' seeds "
                          f"{pairs.seed_start}..{pairs.seed_start + pairs.num_pairs - 1}; students would be scored on "
                          f"latents they were trained on")
    unused = [c for c in p.conditions if all(s.condition != c for s in p.students.values())]
    if unused:
        raise ParamsError(f"conditions lists {unused}, but no student uses it (it would train a teacher for nothing)")
    if p.features.network == "inception" and p.data.dataset != "cifar10":
        raise ParamsError("features.network inception is for dataset cifar10 (Inception needs 3-channel images)")
    if p.data.dataset == "digits" and e.num_samples > p.data.held_out:
        raise ParamsError(f"evaluate.num_samples {e.num_samples} is more than data.held_out {p.data.held_out}: the "
                          f"real-data floor is scored on that many held-out images, as every source is")
    shards = -(-pairs.num_pairs // pairs.shard_size)
    for key in p.students:
        cfg, world, where = p.train_config(key), p.nproc(key), f"students.{key} (with distill)"
        if shards < world:
            raise ParamsError(f"{where}: nproc {world} ranks need a shard each, but pairs.num_pairs {pairs.num_pairs} "
                              f"in shards of pairs.shard_size {pairs.shard_size} make {shards}")
        if cfg.batch_size % world:
            raise ParamsError(f"{where}: batch_size {cfg.batch_size} is not divisible by nproc {world}")
        size, n_all = pairs.shard_size, pairs.num_pairs   # rank r trains on shards r, r + world, ... (PairDataset)
        per_rank = min(sum(min(size, n_all - j * size) for j in range(r, shards, world)) for r in range(world))
        n = per_rank if cfg.num_pairs is None else cfg.num_pairs // world
        if n > per_rank:
            raise ParamsError(f"{where}: num_pairs {cfg.num_pairs} is more than the pair set holds: pairs.num_pairs "
                              f"{n_all} ({per_rank} on each of {world} rank(s))")
        if n < cfg.batch_size // world:
            raise ParamsError(f"{where}: batch_size {cfg.batch_size} takes {cfg.batch_size // world} pairs per rank, "
                              f"more than pairs.num_pairs {n_all} gives each of its {world} rank(s) ({n})")


def _teacher(raw: object) -> TeacherParams:
    """The teacher section: its source keys, and its other keys as the embedded teacher's TeacherConfig."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ParamsError(f"teacher must be a mapping, got {raw!r}")
    if "cond" in raw or "train" in raw:
        raise ParamsError(f"teacher sets {sorted({'cond', 'train'} & set(raw))}: the pipeline sets cond per condition")
    source_keys = {f.name for f in dataclasses.fields(TeacherParams)} - {"train"}
    params = _section(TeacherParams, {k: v for k, v in raw.items() if k in source_keys}, "teacher")
    params.train = _section(TeacherConfig, {k: v for k, v in raw.items() if k not in source_keys}, "teacher")
    return params


def _distill(raw: object) -> dict:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ParamsError(f"distill must be a mapping of training settings, got {raw!r}")
    bad = sorted(PIPELINE_SET & set(raw))
    if bad:
        raise ParamsError(f"distill sets {bad}: the pipeline sets these per student")
    _check_nproc("distill.nproc", raw.get("nproc", 1))
    settings = _numbers(raw, "distill")
    try:
        TrainConfig.from_dict({k: v for k, v in settings.items() if k != "nproc"} | {"pairs": "-", "out": "-"})
    except (ValueError, TypeError) as e:
        raise ParamsError(f"distill: {e}") from e
    return settings


def _reuse(name: object, profile: str) -> str | None:
    if name is None:
        return None
    if check_name("reuse", name) == profile:
        raise ParamsError(f"reuse names this profile ({profile!r}): name another profile, or null")
    return name


def _check_nproc(key: str, nproc: object) -> None:
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ParamsError(f"{key} must be a positive integer (processes per run), got {nproc!r}")


def _numbers(settings: dict, key: str) -> dict:
    """Training settings with YAML 1.1's strings for numbers like 1e-3 read as floats."""
    floats = {f.name for f in dataclasses.fields(TrainConfig) if "float" in str(f.type)}
    try:
        return {k: typed(f"{key}.{k}", v, float, from_yaml=True) if isinstance(v, str) and k in floats else v
                for k, v in settings.items()}
    except ValueError as e:
        raise ParamsError(str(e)) from None


# ------------------------------------------------------------------------------------------------
# Typed construction
# ------------------------------------------------------------------------------------------------

def _one_of(key: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ParamsError(f"{key} must be one of {list(allowed)}, got {value!r}")


def _at_least(key: str, section: object, **minimum: int) -> None:
    """Each named setting of `section` (None: unset) is >= its minimum."""
    for name, low in minimum.items():
        value = getattr(section, name)
        if value is not None and not value >= low:   # (NaN is refused too)
            raise ParamsError(f"{key}.{name} must be >= {low}, got {value!r}")


def _section(cls: type, raw: object, key: str):
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ParamsError(f"{key} must be a mapping, got {raw!r}")
    hints = field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(f"unknown key(s) {unknown} in {key}; allowed: {sorted(fields)}")
    required = sorted(n for n, f in fields.items() if f.default is dataclasses.MISSING
                      and f.default_factory is dataclasses.MISSING and n not in raw)
    if required:
        raise ParamsError(f"{key} lacks {required}")
    try:
        values = {name: typed(f"{key}.{name}", value, hints[name], from_yaml=True) for name, value in raw.items()}
    except ValueError as e:
        raise ParamsError(str(e)) from None
    try:
        obj = cls(**values)
    except (ValueError, TypeError) as e:
        raise ParamsError(f"{key}: {e}") from e
    if hasattr(obj, "check"):
        obj.check(key)
    return obj
