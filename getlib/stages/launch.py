"""Launching a stage's work on several local processes (GPUs), as the pairs and distill stages do."""
from __future__ import annotations

import subprocess
import sys


def torchrun(nproc: int, module: str, args: list[str]) -> None:
    """Run `python -m module args` on `nproc` local processes (torch.distributed.run, standalone)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", module, *args]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
