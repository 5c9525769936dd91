"""Stage teacher@condition: train the embedded teacher, or take an official EDM checkpoint."""
from __future__ import annotations

from getlib.checkpoints import load_teacher_of
from getlib.config import Params
from getlib.io import atomic_copy, atomic_write_json
from getlib.notebook import publishing
from getlib.stages.data import load_data
from getlib.teacher import train_teacher


def make_teacher(p: Params, condition: str, log=None) -> dict:
    """source 'train': train the embedded teacher on the training images; source 'checkpoint':
    copy the named EDM pickle in (so DVC caches and tracks it) and check that it loads."""
    if p.teacher.source == "checkpoint":
        src = p.teacher.checkpoint(condition, p.root)
        atomic_copy(src, p.work("teacher", condition, src.name))
        denoise, ident = load_teacher_of(p, condition)
        summary = {"condition": condition, **ident, "params": sum(x.numel() for x in denoise.parameters())}
    else:
        ds, folder = load_data(p), p.work("teacher", condition)
        folder.mkdir(parents=True, exist_ok=True)
        cfg = p.teacher.train_config(condition)
        summary = {"condition": condition, "kind": "embedded",
                   **train_teacher(ds.train_images, ds.train_labels, cfg, folder / "teacher.pt", log)}
        summary["params"] = sum(x.numel() for x in load_teacher_of(p, condition)[0].parameters())
    if publishing():   # (results/<profile>/teacher-<condition>.json)
        atomic_write_json(p.results(f"teacher-{condition}.json"), summary)
    return summary
