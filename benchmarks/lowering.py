"""Whether this machine, with its kernel libraries lowered to AVX2, makes the committed default's
feature network: the first artifact whose bytes tell one kind of machine from another.

    python benchmarks/lowering.py     # -> benchmarks/results/lowering.md

Each variant of the environment (getlib.machine's variables, alone and with MKL's) trains the default
profile's feature network in a fresh process, exactly as the features stage does, and is compared
with the committed one by the SHA-256 that the claims-64 run records keep of it. Not a speed: a
reproducibility check (docs/results.md#reproducibility-across-machines).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "lowering.md"
RECORDS = ROOT / "results" / "claims-64" / "runs"
LOWERED = {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell",
           "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}
VARIANTS = {
    "as it is": {},
    "the four lowered (getlib.machine)": LOWERED,
    "the four + MKL_ENABLE_INSTRUCTIONS=AVX2": {**LOWERED, "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "the four + MKL_CBWR=AVX2": {**LOWERED, "MKL_CBWR": "AVX2"},
    "the four + MKL_CBWR=COMPATIBLE": {**LOWERED, "MKL_CBWR": "COMPATIBLE"},
}


def child() -> None:
    """Train the default's feature network here and print what came out, as JSON."""
    import torch

    from getlib.config import load_params
    from getlib.features import train_feature_net
    from getlib.machine import machine
    from getlib.stages.data import load_data

    p = load_params(ROOT / "profiles" / "digits.yaml", root=ROOT)
    ds = load_data(p)
    images = torch.cat([ds.train_images, ds.model_space(ds.held_raw)])
    labels = torch.cat([ds.train_labels, ds.held_labels])
    n = len(ds.train_raw)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "feature_net.pt"
        _, report = train_feature_net(images, labels, torch.arange(n), torch.arange(n, len(images)),
                                      epochs=p.features.epochs, seed=p.data.split_seed, out_path=path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(json.dumps({"machine": machine(torch.device("cpu")), "threads": torch.get_num_threads(),
                      "accuracy": report["held_out_accuracy"], "sha256": digest}))


def committed_digest() -> str:
    """The committed feature network's SHA-256, as every claims-64 record keeps it (they agree)."""
    digests = {json.loads(f.read_text())["evaluation"]["features"]["feature_net.pt"] for f in RECORDS.glob("*.json")}
    if len(digests) != 1:
        raise ValueError(f"{RECORDS}: the records name {len(digests)} feature networks, expected one")
    return digests.pop()


def cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())


def main() -> None:
    committed = committed_digest()
    committed_accuracy = json.loads((ROOT / "results" / "digits" / "features.json").read_text())["held_out_accuracy"]
    rows = []
    for label, extra in VARIANTS.items():
        env = {k: v for k, v in os.environ.items() if k not in LOWERED and not k.startswith("MKL_")}
        out = subprocess.run([sys.executable, __file__, "--child"], env={**env, **extra}, cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout
        got = json.loads(out.strip().splitlines()[-1])
        rows.append(f"| {label} | {got['machine']} | {got['threads']} | {got['accuracy']:.4f} | "
                    f"{got['sha256'][:12]} | {'yes' if got['sha256'] == committed else 'no'} |")
        print(rows[-1], flush=True)
    import torch
    text = "\n".join([
        f"# Lowering to AVX2 against the committed feature network ({date.today()}, {cpu_model()}, "
        f"torch {torch.__version__}; made by `python benchmarks/lowering.py`)", "",
        "The default profile's feature network trained in a fresh process per environment, as the features "
        f"stage trains it, against the committed one (SHA-256 {committed[:12]}..., as the claims-64 records "
        f"keep it; held-out accuracy {committed_accuracy:.4f} in results/digits/features.json). "
        "Written by benchmarks/lowering.py.", "",
        "| environment | record name (getlib.machine) | threads | held-out accuracy | sha256 | the committed one |",
        "|---|---|---|---|---|---|", *rows, ""])
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    child() if sys.argv[1:] == ["--child"] else main()
