"""The machine as far as it shapes floating-point results: torch's build and, on a CPU, the vector
instruction set of each kernel library the code runs, or the GPU's name.

On one CPU five libraries pick their kernels by instruction set, each on its own: ATen (torch's
element-wise ops, reductions, normalisation), oneDNN (torch's convolutions, among others),
MKL (torch's BLAS), numpy's own loops, and OpenBLAS (numpy's and scipy's matrix products and the
FID's matrix square root). Kernels of another instruction set round differently, and training
amplifies that into other weights. Each library can be lowered by an environment variable; an
AVX-512 machine with these four lowered to AVX2 made the AVX2 machine's bytes and FIDs (measured on
two AMD EPYC kinds: docs/results.md#reproducibility-across-machines):

    ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell \
    NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"

The Intel Xeon this project was lent, so lowered and MKL too (MKL_ENABLE_INSTRUCTIONS=AVX2 or
MKL_CBWR=AVX2), did not make the AMD machines' results (benchmarks/lowering.py: another feature
network): the libraries pick their code paths by the CPU's maker as well. Lowering is therefore no
requirement: a study's runs train on the pulled upstream wherever they run, and a run record keeps
its machine as one more source of run-to-run variation (getlib.records).

`machine` names one instruction set when all libraries agree ("cpu (AVX2), AMD EPYC, torch 2.14.1")
and each library that differs from ATen's otherwise ("cpu (AVX2, oneDNN AVX512, numpy AVX512), ..."),
then the CPU's model as /proc/cpuinfo names it. Records made before the model was named (every
record of the two claims studies) hold "cpu (AVX512), torch ..." or "cpu (AVX2), torch ...": AMD
EPYC machines, all of them. Classes are ATen's names: DEFAULT, AVX2, AVX512.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import torch

__all__ = ["machine", "kernel_sets", "cpu_class", "onednn_class", "mkl_class", "numpy_class", "openblas_class"]

ORDER = ("DEFAULT", "AVX2", "AVX512")
# oneDNN's names for DNNL_MAX_CPU_ISA (it lower-cases the value and ignores a name it does not know)
ONEDNN = {"sse41": "DEFAULT", "avx": "DEFAULT", "avx2": "AVX2", "avx2_vnni": "AVX2", "avx2_vnni_2": "AVX2",
          **{name: "AVX512" for name in ("avx512_core", "avx512_core_vnni", "avx512_core_bf16", "avx512_core_fp16",
                                         "avx512_core_amx", "avx512_core_amx_fp16", "avx10_1_512",
                                         "avx10_1_512_amx", "avx10_1_512_amx_fp16", "avx10_2_512",
                                         "avx10_2_512_amx_2")}}
# MKL's names for MKL_ENABLE_INSTRUCTIONS, and for MKL_CBWR (its reproducible code path; COMPATIBLE: SSE2)
MKL = {"SSE4_2": "DEFAULT", "AVX": "DEFAULT", "AVX2": "AVX2", "AVX512": "AVX512", "AVX512_E1": "AVX512",
       "AVX512_E2": "AVX512", "AVX512_E3": "AVX512", "AVX512_E4": "AVX512", "AVX10": "AVX512"}
MKL_CBWR = {**MKL, "COMPATIBLE": "DEFAULT", "SSE2": "DEFAULT", "SSSE3": "DEFAULT", "SSE4_1": "DEFAULT"}
# OpenBLAS's core names (threadpoolctl's "architecture") of the x86 kernels this pool's CPUs get
OPENBLAS = {"Haswell": "AVX2", "Zen": "AVX2", "SkylakeX": "AVX512", "Cooperlake": "AVX512",
            "SapphireRapids": "AVX512"}


def machine(device: torch.device) -> str:
    """The name a run record keeps for `device` (see the module's docstring)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}), torch {torch.__version__}"
    what = torch.backends.cpu.get_cpu_capability()
    what += "".join(f", {library} {isa}" for library, isa in kernel_sets().items() if isa not in (None, what))
    model = _cpuinfo()[2]
    return f"{device.type} ({what}), {f'{model}, ' if model else ''}torch {torch.__version__}"


def kernel_sets() -> dict[str, str | None]:
    """The instruction-set class each library besides ATen runs in this process (None: not known)."""
    flags, vendor, _ = _cpuinfo()
    import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS, which threadpoolctl then sees)
    import threadpoolctl
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
        numpy_isa = numpy_class(__cpu_dispatch__, __cpu_features__)
    except ImportError:
        numpy_isa = None
    cores = [lib.get("architecture") for lib in threadpoolctl.threadpool_info() if lib.get("internal_api") == "openblas"]
    return {"oneDNN": None if flags is None else onednn_class(flags, os.environ),
            "MKL": None if flags is None else mkl_class(flags, vendor, os.environ),
            "numpy": numpy_isa, "OpenBLAS": openblas_class(cores)}


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[frozenset[str] | None, str | None, str | None]:
    """The x86 flags, vendor and model name of /proc/cpuinfo; None for each it lacks (another OS or
    architecture: ATen's name then stands alone)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None, None, None
    field = lambda name: next((ln.split(":", 1)[1].strip() for ln in lines if ln.split(":")[0].strip() == name), None)  # noqa: E731
    flags = field("flags")
    return (None if flags is None else frozenset(flags.split())), field("vendor_id"), field("model name")


def cpu_class(flags: frozenset[str] | set[str]) -> str:
    """The CPU's own class, as ATen detects it (AVX-512 needs F, BW, VL and DQ)."""
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "AVX512"
    return "AVX2" if {"avx2", "fma"} <= flags else "DEFAULT"


def _lowest(*classes: str) -> str:
    return min(classes, key=ORDER.index)


def onednn_class(flags, environ: Mapping[str, str]) -> str:
    limit = (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "all").strip().lower()
    return _lowest(cpu_class(flags), ONEDNN.get(limit, "AVX512"))


def mkl_class(flags, vendor: str | None, environ: Mapping[str, str]) -> str | None:
    """MKL picks AVX-512 kernels on Intel CPUs; on others it is no separate choice (None): on the AMD
    EPYC with AVX-512, lowering it changed no result, and left as it was it gave the AVX2 one's."""
    if vendor != "GenuineIntel":
        return None
    cbwr = environ.get("MKL_CBWR", "").split(",")[0].strip().upper()   # (a ",STRICT" suffix aside)
    return _lowest(cpu_class(flags), MKL.get(environ.get("MKL_ENABLE_INSTRUCTIONS", "").strip().upper(), "AVX512"),
                   MKL_CBWR.get(cbwr, "AVX512"))


def numpy_class(dispatch: list[str], features: Mapping[str, bool]) -> str:
    """The highest of numpy's dispatch targets that this CPU has and NPY_DISABLE_CPU_FEATURES left on."""
    on = [t for t in dispatch if features.get(t)]
    if any(t.startswith(("X86_V4", "AVX512")) for t in on):
        return "AVX512"
    return "AVX2" if any(t.startswith(("X86_V3", "AVX2")) for t in on) else "DEFAULT"


def openblas_class(cores: list[str | None]) -> str | None:
    """OpenBLAS's kernels (numpy and scipy each load one; OPENBLAS_CORETYPE sets both), by class;
    a core of another name as it is."""
    classes = sorted({OPENBLAS.get(core, core) for core in cores if core})
    return "/".join(classes) or None
