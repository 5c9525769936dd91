"""The one device resolver: a device setting ('auto', 'cpu', 'cuda', 'cuda:1') to a torch device."""
from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str, local_rank: int = 0, key: str = "device") -> torch.device:
    """'auto' is CUDA when torch sees a GPU, else the CPU. A bare 'cuda' (or 'auto' on a GPU machine)
    is the process's own GPU under torchrun (`local_rank`). `key` names the setting in errors."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{key}: {name} was asked for, but torch sees no GPU here (use auto or cpu)")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
