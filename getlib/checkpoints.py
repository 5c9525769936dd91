"""Loading teachers: the embedded teacher's checkpoint and the official EDM pickles.

Every teacher file a stage reads goes through `teacher_from_checkpoint`, which also returns the
file's identity (kind, name, sha256) that a pair set records. EDM pickles run code when they are
opened, so only files whose sha256 is pinned here are unpickled unless the caller trusts the file.
(Students and the authors' released GET checkpoints are models: `models.load_student`,
`models.load_released`. They are kept apart so that generating pairs does not depend on the
students' code.)
"""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from getlib.edm import Denoiser, EDMPrecond
from getlib.io import file_sha256, first_line
from getlib.settings import TeacherConfig
from getlib.unet import build_teacher

__all__ = ["teacher_from_checkpoint", "load_teacher_of", "load_teacher", "load_edm_checkpoint", "EDMNetwork",
           "EDM_CHECKPOINT_URLS", "EDM_CHECKPOINT_SHA256"]


def load_teacher_of(p, condition: str) -> tuple[Denoiser, dict]:
    """The teacher of `condition` in a profile (a `config.Params`): its teacher stage's file."""
    return teacher_from_checkpoint(p.teacher_file(condition), p.path(p.teacher.edm_repo) if p.teacher.edm_repo
                                   else None, trust_pickle=p.teacher.trust_pickle)


def teacher_from_checkpoint(path: str | Path, edm_repo: str | Path | None = None,
                            trust_pickle: bool = False) -> tuple[Denoiser, dict]:
    """The teacher in `path` and its identity: an official EDM pickle (.pkl, needs `edm_repo`;
    another pickle only with `trust_pickle`) or an embedded teacher written by `teacher.train_teacher`."""
    path = Path(path)
    if path.suffix == ".pkl":
        if edm_repo is None:
            raise ValueError(f"{path} is an EDM pickle: give the EDM repository folder (--edm-repo)")
        denoise, kind = load_edm_checkpoint(path, edm_repo, trust=trust_pickle), "edm"
    else:
        denoise, kind = load_teacher(path), "embedded"
    return denoise, {"kind": kind, "checkpoint": path.name, "sha256": file_sha256(path)}

# ------------------------------------------------------------------------------------------------
# The embedded teacher (teacher.train_teacher)
# ------------------------------------------------------------------------------------------------

def load_teacher(path: str | Path) -> EDMPrecond:
    """The EMA denoiser D(x, sigma, class_labels) saved by `train_teacher`, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no teacher checkpoint at {path}: run the teacher stage first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        cfg = TeacherConfig(**ckpt["config"])
        teacher = build_teacher(cfg, ckpt["img_channels"], ckpt["num_classes"])
        teacher.load_state_dict(ckpt["ema"])
    except Exception as e:  # a truncated file, another kind of checkpoint, or other weights
        raise ValueError(f"{path}: not a teacher checkpoint written by train_teacher "
                         f"({type(e).__name__}: {first_line(e)})") from e
    return teacher.eval().requires_grad_(False)

# ------------------------------------------------------------------------------------------------
# The official EDM checkpoints (CIFAR-10 profiles)
# ------------------------------------------------------------------------------------------------

EDM_CHECKPOINT_URLS = {
    "uncond": "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl",
    "cond": "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-cond-vp.pkl",
}
# sha256 of the official pickles that `load_edm_checkpoint` unpickles without being told to trust
# the file. The unconditional one's is recorded alike by several public projects that verify their
# download; the conditional one's could not be read from this project's (offline) machines, so it is
# not pinned: load it with trust=True (teacher.trust_pickle) after checking your download.
EDM_CHECKPOINT_SHA256 = {
    "uncond": "4d5dcc1f1d0d41c8934ad21626eeddbdc0460182becf9fc059a0631b1eedb4da",
}


def load_edm_checkpoint(pkl_path: str | Path, edm_repo: str | Path, trust: bool = False) -> nn.Module:
    """The 'ema' network of an official EDM pickle, in eval mode without gradients.

    EDM pickles hold their own classes: the EDM repository (github.com/NVlabs/edm, for its
    `dnnlib` and `torch_utils` packages) must be importable, so `edm_repo` is put on sys.path.
    Unpickling runs code from the file: a file whose sha256 is not one of EDM_CHECKPOINT_SHA256 is
    refused before it is opened, unless `trust` says it comes from a source you trust.
    The network is called as net(x, sigma, class_labels) with one-hot labels (label_dim classes).
    """
    pkl_path, edm_repo = Path(pkl_path), Path(edm_repo)
    kind = "cond" if "cond" in pkl_path.name and "uncond" not in pkl_path.name else "uncond"
    if not pkl_path.is_file():
        raise FileNotFoundError(
            f"EDM checkpoint not found at {pkl_path}. Download {EDM_CHECKPOINT_URLS[kind]} "
            f"and put it there (or set teacher.checkpoint in params.yaml to where it is).")
    if not (edm_repo / "dnnlib").is_dir() or not (edm_repo / "torch_utils").is_dir():
        raise FileNotFoundError(
            f"EDM repository not found at {edm_repo} (it needs dnnlib/ and torch_utils/ to unpickle "
            f"the checkpoint): `git clone https://github.com/NVlabs/edm {edm_repo}` "
            f"(or set teacher.edm_repo in params.yaml).")
    if not trust:
        digest = file_sha256(pkl_path)
        if digest not in EDM_CHECKPOINT_SHA256.values():
            raise ValueError(
                f"{pkl_path}: sha256 {digest} is not an official EDM checkpoint's pinned here "
                f"({EDM_CHECKPOINT_SHA256}). Unpickling runs code from the file, so only pinned files are "
                f"loaded; for a file you trust (e.g. the conditional checkpoint, not pinned yet) set "
                f"teacher.trust_pickle: true (--trust-pickle on the command line).")
    if str(edm_repo.resolve()) not in sys.path:
        sys.path.insert(0, str(edm_repo.resolve()))
    try:
        with open(pkl_path, "rb") as f:
            data = pickle.load(f)
    except Exception as e:  # whatever unpickling a wrong or damaged file raises
        raise ValueError(f"{pkl_path}: not a readable EDM network pickle ({type(e).__name__}: {e})") from e
    net = data.get("ema") if isinstance(data, dict) else None
    if not isinstance(net, nn.Module):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{pkl_path}: expected an EDM network pickle, a dict whose 'ema' is a torch "
                         f"module; found {found}")
    for attr in ("img_resolution", "img_channels", "label_dim"):
        if not hasattr(net, attr):
            raise ValueError(f"{pkl_path}: the 'ema' network has no '{attr}': not an EDM denoiser")
    return EDMNetwork(net).eval().requires_grad_(False)


class EDMNetwork(nn.Module):
    """An official EDM network as a `Denoiser`: integer class labels become the one-hot vectors it
    takes. img_resolution, img_channels and label_dim are the network's."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.img_resolution, self.img_channels, self.label_dim = net.img_resolution, net.img_channels, net.label_dim

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        if self.label_dim and class_labels is None:
            raise ValueError(f"this EDM network is class-conditional ({self.label_dim} classes): pass class_labels")
        onehot = F.one_hot(class_labels, self.label_dim).float() if self.label_dim else None
        return self.net(x, sigma, onehot)
