"""Whether this machine, as it is and with its kernel libraries lowered to AVX2, trains the feature
network of the committed results: the first artifact whose bytes tell one kind of machine from another.

    python benchmarks/lowering.py     # -> benchmarks/results/lowering.md

Each variant of the environment (getlib.machine's variables, alone and with MKL's) runs the default
profile's data and features stages (getlib.stages.data, getlib.stages.features) in a fresh process on
2 threads, into a temporary folder, and its feature network is compared by SHA-256 with the two feature
networks the run records keep: the claims-64 block's (the AMD EPYC AVX2 machine's, and the AVX-512
one's lowered) and the 16-token claims study's (the AMD EPYC AVX-512 machine's as it is). Not a
speed: a reproducibility check (docs/results.md#reproducibility-across-machines).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "lowering.md"
RECORDS = {"claims-64": ROOT / "results" / "claims-64" / "runs", "claims": ROOT / "results" / "claims" / "runs"}
THREADS = "2"   # the committed results' count: another count trains other bytes on any machine
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
    """Run the default's data and features stages into a temporary root (publishing nothing) and print
    what came out, as JSON."""
    import torch

    from getlib.config import load_params
    from getlib.machine import machine
    from getlib.stages.data import prepare_data
    from getlib.stages.features import make_features

    with tempfile.TemporaryDirectory() as tmp:
        p = load_params(ROOT / "profiles" / "digits.yaml", root=tmp)   # work/ under tmp
        prepare_data(p)
        summary = make_features(p)
        digest = hashlib.sha256(p.work("features", "feature_net.pt").read_bytes()).hexdigest()
    print(json.dumps({"machine": machine(torch.device("cpu")), "threads": torch.get_num_threads(),
                      "accuracy": summary["held_out_accuracy"], "sha256": digest}))


def committed_digest(folder: Path) -> str:
    """The feature network's SHA-256 that every record in `folder` keeps (they must agree)."""
    digests = {json.loads(f.read_text())["evaluation"]["features"]["feature_net.pt"] for f in folder.glob("*.json")}
    if len(digests) != 1:
        raise ValueError(f"{folder}: the records name {len(digests)} feature networks, expected one")
    return digests.pop()


def cpu() -> str:
    """The CPU as /proc/cpuinfo names it: vendor, family, model, name, its widest vector flags and
    whether it runs under a hypervisor."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    field = lambda name: next((ln.split(":", 1)[1].strip() for ln in lines if ln.split(":")[0].strip() == name),  # noqa: E731
                              "?")
    flags = field("flags").split()
    wide = [f for f in ("hypervisor", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq", "amx_tile") if f in flags]
    return (f"{field('vendor_id')} family {field('cpu family')} model {field('model')}, {field('model name')}, "
            f"flags {' '.join(wide)}")


def main() -> None:
    committed = {name: committed_digest(folder) for name, folder in RECORDS.items()}
    committed_accuracy = json.loads((ROOT / "results" / "digits" / "features.json").read_text())["held_out_accuracy"]
    rows = []
    for label, extra in VARIANTS.items():
        env = {k: v for k, v in os.environ.items()
               if k not in {*LOWERED, "ONEDNN_MAX_CPU_ISA"} and not k.startswith("MKL_")}
        done = subprocess.run([sys.executable, __file__, "--child"], env={**env, **extra, "OMP_NUM_THREADS": THREADS},
                              cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{label}: the child failed\n{done.stderr}")
        got = json.loads(done.stdout.strip().splitlines()[-1])
        same = " | ".join("yes" if got["sha256"] == digest else "no" for digest in committed.values())
        rows.append(f"| {label} | {got['machine']} | {got['threads']} | {got['accuracy']:.4f} | "
                    f"{got['sha256'][:12]} | {same} |")
        print(rows[-1], flush=True)
    import torch
    text = "\n".join([
        f"# Lowering to AVX2 against the committed feature networks ({date.today()}, torch {torch.__version__}; "
        "made by `python benchmarks/lowering.py`)", "",
        f"CPU: {cpu()}.", "",
        "The default profile's data and feature network made in a fresh process per environment, on "
        f"{THREADS} threads, as the data and features stages make them, against the two feature networks the "
        f"run records keep: claims-64's ({committed['claims-64'][:12]}..., made by the AMD EPYC AVX2 machine "
        "and by the AVX-512 one lowered; the committed default's, held-out accuracy "
        f"{committed_accuracy:.4f} in results/digits/features.json) and the 16-token claims study's "
        f"({committed['claims'][:12]}..., the AMD EPYC AVX-512 machine's as it is). "
        "Written by benchmarks/lowering.py.", "",
        "| environment | record name (getlib.machine) | threads | held-out accuracy | sha256 "
        "| claims-64's (AMD AVX2) | claims' (AMD AVX-512) |",
        "|---|---|---|---|---|---|---|", *rows, ""])
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    child() if sys.argv[1:] == ["--child"] else main()
