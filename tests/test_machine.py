"""getlib.machine: the name a record gives the machine, by the kernels each CPU library runs."""
import importlib.util
import json
import os

import pytest
import torch

import getlib.machine as m
from conftest import ROOT

_spec = importlib.util.spec_from_file_location("lowering", ROOT / "benchmarks" / "lowering.py")
lowering = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lowering)

AVX512 = frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"})
AVX2 = frozenset({"avx2", "fma"})


def test_a_cpus_class_is_atens():
    assert m.cpu_class(AVX512) == "AVX512"
    assert m.cpu_class(AVX2 | {"avx512f"}) == "AVX2"   # AVX-512 needs F, BW, VL and DQ
    assert m.cpu_class(frozenset({"sse4_2", "avx"})) == "DEFAULT"


def test_onednn_is_the_cpu_lowered_by_its_variable_as_onednn_reads_it():
    assert m.onednn_class(AVX512, {}) == "AVX512"
    assert m.onednn_class(AVX512, {"DNNL_MAX_CPU_ISA": "AVX2"}) == "AVX2"
    assert m.onednn_class(AVX512, {"DNNL_MAX_CPU_ISA": "avx512_core", "ONEDNN_MAX_CPU_ISA": "avx2_vnni"}) == "AVX2"
    assert m.onednn_class(AVX2, {"DNNL_MAX_CPU_ISA": "AVX512_CORE"}) == "AVX2"   # never above the CPU
    assert m.onednn_class(AVX512, {"DNNL_MAX_CPU_ISA": "AVX2_FOO"}) == "AVX512"   # a name oneDNN ignores


def test_mkl_is_a_choice_on_intel_cpus_only():
    assert m.mkl_class(AVX512, "AuthenticAMD", {}) is None
    assert m.mkl_class(AVX512, "GenuineIntel", {}) == "AVX512"
    assert m.mkl_class(AVX512, "GenuineIntel", {"MKL_ENABLE_INSTRUCTIONS": "avx2"}) == "AVX2"
    # MKL_CBWR=AVX2 made the same bytes as MKL_ENABLE_INSTRUCTIONS=AVX2 (benchmarks/results/lowering.md)
    assert m.mkl_class(AVX512, "GenuineIntel", {"MKL_CBWR": "AVX2,STRICT"}) == "AVX2"
    assert m.mkl_class(AVX512, "GenuineIntel", {"MKL_CBWR": "COMPATIBLE"}) == "DEFAULT"
    assert m.mkl_class(AVX512, "GenuineIntel", {"MKL_CBWR": "AUTO", "MKL_ENABLE_INSTRUCTIONS": "AVX512"}) == "AVX512"


def test_numpy_and_openblas_classes():
    dispatch = ["X86_V3", "X86_V4", "AVX512_ICL", "AVX512_SPR"]
    assert m.numpy_class(dispatch, {"X86_V3": True, "X86_V4": True, "AVX512_ICL": False}) == "AVX512"
    assert m.numpy_class(dispatch, {"X86_V3": True, "X86_V4": False, "AVX512_ICL": False}) == "AVX2"
    assert m.numpy_class(dispatch, {}) == "DEFAULT"
    assert m.openblas_class(["Haswell", "Zen"]) == "AVX2"
    assert m.openblas_class(["SkylakeX", "Haswell"]) == "AVX2/AVX512"
    assert m.openblas_class(["Neoversen2"]) == "Neoversen2"
    assert m.openblas_class([]) is None


def test_a_machine_is_named_by_each_library_that_differs_from_aten(monkeypatch):
    """An AVX-512 CPU with only ATen lowered makes neither machine's bytes: its records say so. With
    every library lowered, or none, one instruction set; then the CPU's model."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(m, "_cpuinfo", lambda: (AVX512, "AuthenticAMD", "AMD EPYC"))
    half = {"oneDNN": "AVX512", "MKL": None, "numpy": "AVX512", "OpenBLAS": "AVX2"}
    monkeypatch.setattr(m, "kernel_sets", lambda: half)
    assert m.machine(torch.device("cpu")) == f"cpu (AVX2, oneDNN AVX512, numpy AVX512), AMD EPYC, torch {torch.__version__}"
    monkeypatch.setattr(m, "kernel_sets", lambda: dict.fromkeys(half, "AVX2") | {"MKL": None})
    assert m.machine(torch.device("cpu")) == f"cpu (AVX2), AMD EPYC, torch {torch.__version__}"


def test_every_maker_is_named_alike(monkeypatch):
    """No maker is special: an Intel Xeon and an AMD EPYC, both lowered to AVX2, are told apart by
    their model names (they make other bytes: benchmarks/results/lowering.md)."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    lowered = {"oneDNN": "AVX2", "MKL": "AVX2", "numpy": "AVX2", "OpenBLAS": "AVX2"}
    monkeypatch.setattr(m, "kernel_sets", lambda: lowered)
    monkeypatch.setattr(m, "_cpuinfo", lambda: (AVX512, "GenuineIntel", "Intel(R) Xeon(R) Platinum 8481C"))
    intel = m.machine(torch.device("cpu"))
    assert intel == f"cpu (AVX2), Intel(R) Xeon(R) Platinum 8481C, torch {torch.__version__}"
    monkeypatch.setattr(m, "_cpuinfo", lambda: (AVX512, "AuthenticAMD", "AMD EPYC"))
    monkeypatch.setattr(m, "kernel_sets", lambda: lowered | {"MKL": None})
    assert m.machine(torch.device("cpu")) == f"cpu (AVX2), AMD EPYC, torch {torch.__version__}" != intel


@pytest.mark.skipif(m._cpuinfo()[0] is None, reason="no x86 /proc/cpuinfo here")
def test_this_machine_unlowered_is_named_as_aten_names_it():
    """(The tests run without the lowering variables: every library then takes the CPU's own class.)"""
    lowering = ("ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                "MKL_CBWR", "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")
    if any(v in os.environ for v in lowering):
        pytest.skip("a lowering variable is set")
    flags, _, model = m._cpuinfo()
    assert torch.backends.cpu.get_cpu_capability() == m.cpu_class(flags)
    assert m.machine(torch.device("cpu")) == f"cpu ({m.cpu_class(flags)}), {model}, torch {torch.__version__}"


def test_lowering_compares_with_the_one_feature_network_each_studys_records_keep(tmp_path):
    """benchmarks/lowering.py's reference: every record of a study names the same feature network,
    and two studies made on different machines name different ones; records that disagree are refused."""
    digests = [lowering.committed_digest(folder) for folder in lowering.RECORDS.values()]
    assert all(len(d) == 64 for d in digests) and len(set(digests)) == 2
    for name, digest in (("a.json", "0" * 64), ("b.json", "1" * 64)):
        (tmp_path / name).write_text(json.dumps({"evaluation": {"features": {"feature_net.pt": digest}}}))
    with pytest.raises(ValueError, match=f"{tmp_path}: the records name 2 feature networks"):
        lowering.committed_digest(tmp_path)
