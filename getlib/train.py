"""Distillation: train a one-step student (GET or ViT) on teacher noise/image pairs.

The paper's recipe is the default: L1 loss on each of GET's 6 unrolled states with fixed-point
correction weights 0.8^(n-k-1), AdamW lr 1e-4 (weight decay 0, default betas), no warm-up or
clipping, EMA 0.9999 per step, batch 128. Every knob is a `TrainConfig` field (and a CLI flag).

Determinism. What a step sees depends on (seed, step, world size) alone: each rank's batch of step
s is a slice of a per-epoch permutation of its own shards, and each pair's initial equilibrium state
z0 follows the one z0 rule (`models.z0_for_keys`), keyed by (seed, the pair's index in the whole
set, epoch). So a run resumed from its checkpoint ends with weights bit-identical to an
uninterrupted one (on CPU); a pair's
z0 does not depend on which rank or batch it lands in, so W ranks and one process given the same
global batch compute the same step. Resuming with another world size is refused (it changes the order).

    python -m getlib.train --pairs data/pairs --out runs/get-t --model GET-T/2 --max_steps 800000
    torchrun --nproc_per_node=4 -m getlib.train --pairs ... --out ... --batch_size 128
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from getlib.deq import LOSSES, fp_correction
from getlib.ema import ema_beta, update_ema
from getlib.io import atomic_torch_save, atomic_write_csv, atomic_write_json, file_sha256, first_line
from getlib.models import GET, ViT_models, build_model, count_params, mix_seed, z0_for_keys
from getlib.pairs import MANIFEST, PairDataset
from getlib.provenance import RECORD, code_fingerprint, read_record, write_record
from getlib.settings import GET_CONFIGS, VIT_CONFIGS, DEQConfig, TrainConfig, recipe_of

__all__ = ["TrainConfig", "train", "TrainingDiverged", "learning_rate", "resumable_changes",
           "resume_problems", "reuse_problems", "main"]

# Settings a resumed run may change; any other difference from the checkpoint is refused.
RESUMABLE_CHANGES = {"max_steps", "time_budget_s", "log_every", "ckpt_every", "sample_every", "snapshot_every",
                     "num_samples", "num_workers", "device", "progress", "out"}


class TrainingDiverged(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------
# Data: a deterministic schedule of (pair, epoch) items, and z0 per pair and epoch
# ------------------------------------------------------------------------------------------------

class StepBatches(Sampler):
    """Batches of (local index, epoch): step s takes slice s % steps_per_epoch of epoch
    s // steps_per_epoch's permutation (seeded by seed, rank, epoch); starts at `start_step`."""

    def __init__(self, n: int, batch: int, seed: int, rank: int, start_step: int, max_steps: int):
        if n < batch:
            raise ValueError(f"this rank holds {n} pairs, fewer than its batch of {batch}")
        self.n, self.batch, self.seed, self.rank = n, batch, seed, rank
        self.start, self.stop = start_step, max_steps
        self.steps_per_epoch = n // batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, perm = -1, None
        for step in range(self.start, self.stop):
            e, j = divmod(step, self.steps_per_epoch)
            if e != epoch:
                g = torch.Generator().manual_seed(mix_seed(self.seed, self.rank, e))
                epoch, perm = e, torch.randperm(self.n, generator=g).tolist()
            yield [(i, e) for i in perm[j * self.batch:(j + 1) * self.batch]]

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


class TrainingItems(Dataset):
    """(latents, images, labels, z0) for a batch of (local index, epoch) items; z0 has no columns
    for models without one. The DataLoader fetches a whole batch at once through `__getitems__`."""

    def __init__(self, pairs: PairDataset, z0_shape: tuple[int, ...] | None, seed: int,
                 targets: list[int] | None = None):
        self.pairs, self.z0_shape, self.seed = pairs, z0_shape, seed
        self.targets = targets   # shuffle_targets: local index -> the local index whose image it learns

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return tuple(t[0] for t in self.__getitems__([item]))

    def __getitems__(self, items: list[tuple[int, int]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        indices = [i for i, _ in items]
        latents, images, labels = self.pairs.batch(indices)
        if self.targets is not None:
            images = self.pairs.batch([self.targets[i] for i in indices])[1]
        if self.z0_shape is None:
            return latents, images, labels, torch.empty(len(items), 0)
        keys = [(self.seed, g_index, epoch) for g_index, (_, epoch) in
                zip(self.pairs.global_indices(indices).tolist(), items)]
        return latents, images, labels, z0_for_keys(keys, self.z0_shape)


def _batched(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """collate_fn for `TrainingItems.__getitems__`, which already returns stacked tensors."""
    return batch


# ------------------------------------------------------------------------------------------------
# Set-up
# ------------------------------------------------------------------------------------------------

def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _build(cfg: TrainConfig, pairs: PairDataset) -> nn.Module:
    """The student for this pair set's data shape, with the run's DEQ recipe."""
    c, h, w = pairs.image_shape
    if h != w:
        raise ValueError(f"pairs: images must be square, got {h}x{w}")
    if cfg.cond and pairs.num_classes is None:
        raise ValueError(f"cond=True needs class-conditional pairs, but {cfg.pairs} is unconditional")
    kwargs = dict(input_size=h, in_channels=c, cond=cfg.cond, num_classes=pairs.num_classes or 10)
    if cfg.model in ViT_models:
        if cfg.deq:
            raise ValueError(f"deq settings apply to GET models, not to model={cfg.model!r}")
        return build_model(cfg.model, **kwargs)
    return build_model(cfg.model, deq=cfg.deq, **kwargs)  # names an unknown model


def _checkpoint_path(out: Path) -> Path:
    return out / "checkpoints" / "latest.pt"


def resumable_changes(cfg: TrainConfig) -> set[str]:
    """Settings a run resumed with `cfg` may change (a cosine schedule is tied to its max_steps)."""
    return RESUMABLE_CHANGES - ({"max_steps"} if cfg.lr_schedule == "cosine" else set())


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of step `step` (0-based): linear warm-up, then constant or cosine to 0."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "cosine":
        progress = max(0, step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * warm


CHECKPOINT_KEYS = {"step", "images_seen", "config", "recent_losses", "model", "ema", "opt"}
# Wall-clock per logged step: beside metrics.csv, listed in .dvcignore (a run folder's files are a
# pure function of its pairs, settings and code; timings are not, so they are kept apart).
TIMING = "timing.csv"


def _load_checkpoint(path: Path) -> dict:
    """A training checkpoint written by `train`, or an error naming the file."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # truncated, not a torch file, or holding objects weights_only refuses
        raise ValueError(f"{path}: not a readable training checkpoint ({type(e).__name__}: {first_line(e)})") from e
    missing = sorted(CHECKPOINT_KEYS - set(saved)) if isinstance(saved, dict) else ["(not a dict)"]
    if missing or not isinstance(saved["config"], dict):
        raise ValueError(f"{path}: not a training checkpoint written by getlib.train (lacks {missing or ['config']})")
    return saved


def _provenance(cfg: TrainConfig) -> dict:
    """What a run's weights depend on beyond its settings: its pair set and the training code."""
    return {"pairs_manifest_sha256": file_sha256(Path(cfg.pairs) / MANIFEST), "code": code_fingerprint("getlib.train")}


def resume_problems(cfg: TrainConfig, world: int = 1) -> list[str]:
    """Why the run folder `cfg.out` cannot be resumed (or, finished, reused) with `cfg` on `world`
    processes; [] when it can, or when it holds nothing. A run is resumed only when its settings
    (all but `resumable_changes`), its pair set's manifest, the training code (getlib.train's import
    closure) and its checkpoint's recorded sha256 all agree."""
    out = Path(cfg.out)
    ckpt = _checkpoint_path(out)
    if not out.is_dir() or not any(p.name != RECORD for p in out.iterdir()):
        return []
    if not ckpt.is_file():
        return [f"{out} holds files but no checkpoint ({ckpt.relative_to(out)})"]
    record = read_record(out)
    if record is None:
        return [f"{out} has no provenance record ({RECORD}): the pair set and code that made it are unknown"]
    now = _provenance(cfg)
    problems = []
    if record.get("pairs_manifest_sha256") != now["pairs_manifest_sha256"]:
        problems.append(f"its pair set changed ({Path(cfg.pairs) / MANIFEST} is not the one it was trained on)")
    if record.get("code") != now["code"]:
        problems.append("the training code changed (getlib.train or a module it imports)")
    if file_sha256(ckpt) not in (record.get("checkpoint_sha256"), record.get("checkpoint_sha256_next")):
        problems.append(f"{ckpt}: sha256 does not match the one recorded when it was written")
    if problems:
        return problems
    try:
        saved = _load_checkpoint(ckpt)["config"]
    except ValueError as e:
        return [str(e)]
    now = {**_settings(cfg), "world_size": world}
    return [f"setting {k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in now
            if k not in resumable_changes(cfg) and _jsonable(saved.get(k)) != _jsonable(now[k])]


# Resumable settings that do not change what a finished run holds (the others, e.g. snapshot_every, do).
_OUTPUT_NEUTRAL = {"time_budget_s", "num_workers", "device", "progress", "out"}


def reuse_problems(cfg: TrainConfig, source: str | Path, world: int = 1) -> list[str]:
    """Why the finished run in `source` (another profile's) is not the run `cfg` would make; [] when
    it is: finished, with the same pair set, code, intact checkpoint and every setting that shapes
    its files. Training being deterministic, a copy of it is then the run `cfg` makes."""
    source = Path(source)
    if not (source / "student.pt").is_file():
        return [f"{source} holds no finished run"]
    problems = resume_problems(dataclasses.replace(cfg, out=str(source)), world)
    if problems:
        return problems
    saved = _load_checkpoint(_checkpoint_path(source))["config"]
    now = _settings(cfg)
    problems = [f"setting {k}: {source} has {saved.get(k)!r}, now {now[k]!r}" for k in sorted(resumable_changes(cfg))
                if k in now and k not in _OUTPUT_NEUTRAL and _jsonable(saved.get(k)) != _jsonable(now[k])]
    ran_on, here = torch.device(run_summary(source)["device"]).type, _device(cfg, 0).type
    if ran_on != here:   # bf16 autocast on CUDA, float32 on the CPU: not the same numbers
        problems.append(f"{source} ran on {ran_on}, this run would run on {here}")
    return problems


def _settings(cfg: TrainConfig) -> dict:
    """The run's settings as its files record them: without the pair set's and the run's paths (the
    pair set is identified by its manifest's sha256 in the run record), so that the files do not
    depend on where the project lies."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("pairs", "out")}
    # the resolved architecture and DEQ recipe too: a run's code fingerprint leaves settings.py out
    # (it holds declarations whose values each record keeps), so a changed default still shows here
    get = cfg.model in GET_CONFIGS
    return {**settings, "architecture": {**GET_CONFIGS, **VIT_CONFIGS}.get(cfg.model),
            "deq_resolved": dataclasses.asdict(DEQConfig.from_dict(cfg.deq)) if get else None}


def run_summary(out: str | Path) -> dict:
    """A finished run's summary: out/run.json and the wall-clock seconds from its run record."""
    out = Path(out)
    return {**json.loads((out / "run.json").read_text()), "seconds": (read_record(out) or {}).get("seconds")}


def training_log(out: str | Path) -> list[dict]:
    """The run's logged rows (metrics.csv) with their wall-clock columns (timing.csv) joined by step."""
    out = Path(out)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    timing = {}
    if (out / TIMING).exists():
        with open(out / TIMING, newline="") as f:
            timing = {r["step"]: r for r in csv.DictReader(f)}
    return [{**r, **{k: v for k, v in timing.get(r["step"], {}).items() if k != "step"}} for r in rows]


def _jsonable(v: object) -> object:
    return json.loads(json.dumps(v))


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------

def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a distillation run; returns its summary (also written to out/run.json)."""
    if not cfg.pairs or not cfg.out:
        raise ValueError("pairs and out must be set (the pair set folder and the run folder)")
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the world size {world}")
    out = Path(cfg.out)
    if not Path(cfg.pairs).exists():
        raise FileNotFoundError(f"pairs: no pair set at {cfg.pairs}: generate the pairs first")
    pairs = PairDataset(cfg.pairs, rank=rank, world_size=world)  # names a broken pair set
    if cfg.num_pairs is not None and cfg.num_pairs // world > len(pairs):
        raise ValueError(f"num_pairs {cfg.num_pairs}: {cfg.pairs} holds {len(pairs)} pairs per rank on {world} "
                         f"rank(s), fewer than num_pairs // {world}")
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    model = _build(cfg, pairs)
    device = _device(cfg, local_rank)
    problems = resume_problems(cfg, world)   # refuse a folder it cannot resume before anything starts
    if problems:
        raise ValueError(f"{out}: cannot resume this run: {'; '.join(problems)}. Use another out folder, "
                         f"or delete it to start over")
    saved = _load_checkpoint(_checkpoint_path(out)) if _checkpoint_path(out).exists() else None
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(cfg, pairs, model, saved, device, rank, world, distributed, out)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, pairs: PairDataset, model: nn.Module, saved: dict | None, device: torch.device,
           rank: int, world: int, distributed: bool, out: Path) -> dict:
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = model.to(device).train()
    ema = build_model(cfg.model, **_model_kwargs(model)).to(device).eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                            fused=True)   # (a run resumed from a checkpoint keeps the checkpoint's choice)
    step, images_seen, wall_before = 0, 0, 0.0
    ckpt_path = _checkpoint_path(out)
    if saved is not None:
        model.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        opt.load_state_dict(saved["opt"])
        step, images_seen, wall_before = saved["step"], saved["images_seen"], read_record(out).get("seconds", 0.0)
        recent = list(saved["recent_losses"])
    else:
        recent = []
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        record = read_record(out) if saved is not None else {**_provenance(cfg), "checkpoint_sha256": None}
        write_record(out, record)
        for log in ("metrics.csv", "samples.csv", TIMING):
            _trim_log(out / log, step)

    net = model
    if cfg.compile:
        net = torch.compile(net)
    if distributed:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    local_batch = cfg.batch_size // world
    z0_shape = (model.grid ** 2, model.hidden_size) if isinstance(model, GET) else None
    n = len(pairs) if cfg.num_pairs is None else cfg.num_pairs // world   # this rank's first n pairs
    targets = None
    if cfg.shuffle_targets:
        targets = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(cfg.seed, rank, 2))).tolist()
    loader = DataLoader(TrainingItems(pairs, z0_shape, cfg.seed, targets),
                        batch_sampler=StepBatches(n, local_batch, cfg.seed, rank, step, cfg.max_steps),
                        collate_fn=_batched, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.num_workers > 0)
    loss_fn = LOSSES[cfg.loss]
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    start = time.perf_counter()
    log_t, log_images = start, 0
    bar = _progress(cfg, rank, step)
    logs = _Logs(out) if rank == 0 else None
    stopped_by = "max_steps"
    for latent, image, label, z0 in loader:
        latent, image = latent.to(device, non_blocking=True), image.to(device, non_blocking=True)
        label = label.to(device) if cfg.cond else None
        kw = {"z0": z0.to(device, non_blocking=True)} if z0_shape else {}
        lr = learning_rate(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            preds = net(latent, label, **kw)
            loss, per_state = fp_correction(lambda p, t: loss_fn(p.float(), t), preds, image, cfg.gamma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item() if cfg.grad_clip else None
        value = loss.detach()
        if distributed:
            dist.all_reduce(value)
            value /= world
        value = value.item()
        _check_divergence(value, recent, step + 1, cfg, ckpt_path)
        opt.step()
        beta = (ema_beta(images_seen, cfg.batch_size, cfg.ema_halflife_images, cfg.ema_rampup_ratio)
                if cfg.ema_halflife_images else cfg.ema_decay)   # EDM: from the images seen before this step
        update_ema(ema, model, beta)
        step += 1
        images_seen += cfg.batch_size
        log_images += cfg.batch_size
        elapsed = wall_before + time.perf_counter() - start
        out_of_time = cfg.time_budget_s is not None and elapsed > cfg.time_budget_s
        if distributed and cfg.time_budget_s is not None:  # every rank stops at the same step
            flag = torch.tensor(float(out_of_time), device=device)
            dist.all_reduce(flag)
            out_of_time = flag.item() > 0
        last = step == cfg.max_steps or out_of_time
        if rank == 0:
            if step % cfg.log_every == 0 or last:
                now = time.perf_counter()
                logs.write("metrics.csv", {
                    "step": step, "loss": value, **{f"loss_state{k + 1}": float(l) for k, l in enumerate(per_state)},
                    "lr": lr, "ema_beta": beta, "grad_norm": _grad_norm(model) if grad_norm is None else grad_norm})
                logs.write(TIMING, {"step": step, "images_per_s": log_images / max(now - log_t, 1e-9),
                                    "seconds": elapsed})
                log_t, log_images = now, 0
            if step % cfg.sample_every == 0 or last:
                _sample_report(ema, cfg, pairs, device, out, step)
            if cfg.snapshot_every and (step % cfg.snapshot_every == 0 or last):
                atomic_torch_save(_student_blob(ema, cfg, {"step": step, "images_seen": images_seen}),
                                  out / "snapshots" / f"step-{step:07d}.pt")
            if step % cfg.ckpt_every == 0 or last:
                config = {**_settings(cfg), "world_size": world}
                def announce(tmp: Path) -> None:   # a kill between rename and record keeps the run resumable
                    record["checkpoint_sha256_next"] = file_sha256(tmp)
                    write_record(out, record)
                atomic_torch_save({"step": step, "images_seen": images_seen, "config": config,
                                   "recent_losses": list(recent), "model": model.state_dict(),
                                   "ema": ema.state_dict(), "opt": opt.state_dict()}, ckpt_path, announce)
                record.update(checkpoint_sha256=record.pop("checkpoint_sha256_next"), seconds=elapsed)
                write_record(out, record)
        if bar is not None:
            bar.update(1)
            rate = (step - bar.initial) * cfg.batch_size / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(loss=f"{value:.4f}", img_s=f"{rate:.0f}", refresh=False)
        if out_of_time:
            stopped_by = "time_budget_s"
            break
    if bar is not None:
        bar.close()
    if logs is not None:
        logs.close()
    summary = {"model": cfg.model, "params": count_params(model), "cond": cfg.cond, "steps": step,
               "images_seen": images_seen, "stopped_by": stopped_by, "world_size": world,
               "device": str(device), "recipe": _recipe(model, cfg), "config": _settings(cfg)}
    seconds = wall_before + time.perf_counter() - start
    if rank == 0:   # the files hold no timings: the seconds go to the run record and the returned summary
        atomic_torch_save(_student_blob(ema, cfg, summary), out / "student.pt")
        atomic_write_json(out / "run.json", _jsonable(summary))
        record["seconds"] = seconds
        write_record(out, record)
    return {**summary, "seconds": seconds}


class _Logs:
    """The run's CSV logs, appended a row at a time (a torn last line is repaired by `_trim_log`)."""

    def __init__(self, out: Path):
        self.out, self.files, self.writers = out, {}, {}

    def write(self, name: str, row: dict) -> None:
        if name not in self.files:
            self.files[name] = f = open(self.out / name, "a", newline="")
            self.writers[name] = csv.DictWriter(f, fieldnames=list(row))
            if f.tell() == 0:
                self.writers[name].writeheader()
        self.writers[name].writerow(row)
        self.files[name].flush()

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def _grad_norm(model: nn.Module) -> float:
    """The total L2 norm of the gradients (before any clipping; the step left them unchanged)."""
    norms = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return torch.stack(norms).norm().item() if norms else 0.0


def _student_blob(ema: nn.Module, cfg: TrainConfig, summary: dict) -> dict:
    """What `load_student` reads: the EMA weights and how to rebuild the model."""
    return {"model_name": cfg.model, "model_kwargs": _model_kwargs(ema), "ema": ema.state_dict(), "summary": summary}


def _progress(cfg: TrainConfig, rank: int, step: int):
    if not cfg.progress or rank != 0:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=cfg.max_steps, initial=step, desc=cfg.model, unit="step", dynamic_ncols=True)


def _model_kwargs(model: nn.Module) -> dict:
    kw = dict(input_size=model.input_size, in_channels=model.in_channels, cond=model.cond,
              num_classes=model.num_classes)
    if isinstance(model, GET):
        kw["deq"] = dataclasses.asdict(model.deq_cfg)
    return kw


def _recipe(model: nn.Module, cfg: TrainConfig) -> dict:
    """Which gradient recipe the run used (recorded with its results)."""
    if not isinstance(model, GET):
        return {"kind": "single output", "loss": cfg.loss}
    d = model.deq_cfg
    return {"kind": "DEQ", "name": recipe_of(d), "loss": cfg.loss, "gamma": cfg.gamma, "no_grad_iterations": d.f_max_iter,
            "grad": d.grad, "grad_steps": d.grad_steps, "tau": d.tau, "sup_gap": d.sup_gap,
            "memory_efficient": d.memory_efficient}


def _check_divergence(value: float, recent: list[float], step: int, cfg: TrainConfig, ckpt: Path) -> None:
    exploded = len(recent) >= 20 and value > cfg.explode_factor * float(np.median(recent))
    if not math.isfinite(value) or exploded:
        where = f"the last good checkpoint is {ckpt}" if ckpt.exists() else "no checkpoint was written yet"
        raise TrainingDiverged(f"loss {'became ' + str(value) if not math.isfinite(value) else f'exploded to {value:.4g}'} "
                               f"at step {step}; {where}. Lower lr, add warmup_steps or grad_clip.")
    recent.append(value)
    del recent[:-100]


def _trim_log(path: Path, step: int) -> None:
    """On (re)start, drop logged rows past the checkpoint's step (they will be logged again) and
    repair what a kill mid-append can leave: a last line without its newline, a short row."""
    if not path.exists():
        return
    text = path.read_bytes().decode("utf-8", errors="replace")
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]   # a torn last line
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    header = text.splitlines()[0].split(",") if text else []
    if not header or header[0] != "step":
        path.unlink()   # not even a whole header: the log starts again
        return
    kept = [r for r in rows if None not in r and None not in r.values() and _int(r["step"]) is not None
            and _int(r["step"]) <= step]
    atomic_write_csv(kept, path, header)


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


@torch.no_grad()
def _sample_report(ema: nn.Module, cfg: TrainConfig, pairs: PairDataset, device: torch.device, out: Path,
                   step: int) -> None:
    """EMA samples for fixed seeds -> samples/step-XXXXXXX.png; GET's residuals -> samples.csv."""
    from getlib.edm import latents_for_seeds
    from getlib.images import save_grid

    n = cfg.num_samples
    latents, labels = latents_for_seeds(range(n), pairs.image_shape, pairs.num_classes if cfg.cond else None)
    kw = dict(z0=ema.initial_states(range(n)).to(device), return_stats=True) if isinstance(ema, GET) else {}
    result = ema(latents.to(device), None if labels is None else labels.to(device), **kw)
    images, stats = result if isinstance(ema, GET) else (result, None)
    save_grid(images.float().cpu(), out / "samples" / f"step-{step:07d}.png")
    row = {"step": step, "abs_residual": float("nan"), "rel_residual": float("nan"), "iterations": 0}
    if stats is not None:
        row.update(abs_residual=stats.abs_lowest.mean().item(), rel_residual=stats.rel_lowest.mean().item(),
                   iterations=stats.n_iter)
    path = out / "samples.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def cli_args(cfg: TrainConfig) -> list[str]:
    """`cfg` as command-line flags that `main` reads back to the same settings (YAML, so that nested
    values such as deq: {b_tol: 1e-6} keep their types)."""
    def flag(value: object) -> str:
        return yaml.safe_dump(list(value) if isinstance(value, tuple) else value,
                              default_flow_style=True).removesuffix("\n...\n").strip()
    return [a for f in dataclasses.fields(cfg) for a in (f"--{f.name}", flag(getattr(cfg, f.name)))]


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The TrainConfig of a command line (see `main`)."""
    ap = argparse.ArgumentParser(prog="python -m getlib.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML file of TrainConfig fields (flags override it)")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        ap.add_argument(f"--{f.name}", type=yaml.safe_load, default=argparse.SUPPRESS,
                        help=f"(default: {getattr(defaults, f.name)!r})")
    args = vars(ap.parse_args(argv))
    settings = yaml.safe_load(open(args.pop("config"))) if args.get("config") else {}
    args.pop("config", None)
    settings = {**(settings or {}), **args}
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for key, value in settings.items():
        if types.get(key) == "str":            # paths and names stay strings whatever YAML makes of them
            settings[key] = str(value)
        elif "float" in types.get(key, "") and isinstance(value, str):
            try:                               # YAML 1.1 reads 2e-3 as a string
                settings[key] = float(value)
            except ValueError:
                pass                           # TrainConfig names the bad value
    return TrainConfig.from_dict(settings)


def main(argv: list[str] | None = None) -> dict:
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
