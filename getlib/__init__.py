"""getlib: the library behind the GET companion (Geng, Pokle & Kolter, NeurIPS 2023).

Modules: `models` (GET, ViT, registries, released checkpoints), `deq` (solvers, gradients,
fixed-point correction).
"""
__version__ = "0.1.0"
